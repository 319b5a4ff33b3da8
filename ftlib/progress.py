"""Progress bars that read well live *and* when a notebook is saved.

Live in JupyterLab, ``tqdm.auto`` draws a widget. A notebook executed headless (``nbconvert --execute``, nbval,
CI) saves only that widget's text form, frozen at ``0%`` - a reader of the committed notebook would see a bar
that never moved. With ``FTLIB_FINISHED_BARS=1`` in the environment (the course's notebook runs set it) a bar
prints nothing while it runs and one line, its finished state, when it closes.
"""
from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm as _live
from tqdm.std import tqdm as _text

ENV = "FTLIB_FINISHED_BARS"


class FinishedBar(_text):
    """Silent while running; writes the bar's final line (count, time, rate, postfix) once, at close."""

    def __init__(self, *args, **kwargs):
        self._sink = open(os.devnull, "w")  # tqdm's own writes (start, refreshes, the closing newline) vanish
        kwargs["file"] = self._sink
        super().__init__(*args, **kwargs)

    def display(self, msg=None, pos=None):  # noqa: ARG002 - tqdm's signature
        return True

    def close(self):
        if self.disable or getattr(self, "_ftlib_closed", False):
            return super().close()
        self._ftlib_closed = True
        line = self.format_meter(**self.format_dict)
        super().close()
        self._sink.close()
        print(line, file=sys.stderr, flush=True)


def progress_bar(*args, **kwargs):
    """``tqdm.auto.tqdm(*args, **kwargs)``, or a ``FinishedBar`` when ``$FTLIB_FINISHED_BARS`` is set."""
    cls = FinishedBar if os.environ.get(ENV) else _live
    return cls(*args, **kwargs)
