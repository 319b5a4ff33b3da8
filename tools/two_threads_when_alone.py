"""IPython start-up file for `make test`'s chain of notebooks: take the second core once the other slot is done.

`make test` runs one-thread jobs two at a time, because three busy threads on two cores stall each other's OpenMP
barriers (docs/benchmarks.md, "How make test is shaped"). The chain 05 -> 08 -> 09 is the longest job and ends
after the other slot's last job, with one core idle. That job's kernels load this file (the Makefile copies it into
a private IPYTHONDIR's start-up folder). Once the file named by ``FTLIB_ALONE_STAMP`` exists (the other slot's last
job writes it when it ends), torch gets two threads: at once, even inside a long cell (09's generation is one cell
of about three minutes), through a watcher thread that signals the kernel's main thread, and before each cell as a
fallback (torch imported after the signal). It prints nothing, so no cell's output changes; the checked cells
print only what holds at any thread count.
"""
import os
import signal
import sys
import threading
import time


def _alone() -> bool:
    stamp = os.environ.get("FTLIB_ALONE_STAMP")
    return bool(stamp) and os.path.exists(stamp)


def _take_second_core() -> bool:
    """Two threads for torch, in the main thread (OpenMP's count is per thread); True once done."""
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    if torch.get_num_threads() < 2:
        torch.set_num_threads(2)
    return True


def _before_cell(*_args) -> None:
    if _alone() and _take_second_core():
        get_ipython().events.unregister("pre_run_cell", _before_cell)  # noqa: F821 (IPython's global)


def _on_signal(*_args) -> None:
    # a Python signal handler runs in the main thread between two bytecodes: never inside a torch op
    _take_second_core()


def _watch() -> None:
    while not _alone():
        time.sleep(1)
    os.kill(os.getpid(), signal.SIGUSR1)


if os.environ.get("FTLIB_ALONE_STAMP"):
    signal.signal(signal.SIGUSR1, _on_signal)
    threading.Thread(target=_watch, name="two-threads-when-alone", daemon=True).start()
    get_ipython().events.register("pre_run_cell", _before_cell)  # noqa: F821 (IPython's global)
