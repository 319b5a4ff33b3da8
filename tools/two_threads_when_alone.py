"""IPython start-up file for `make test`'s chain of notebooks: take the second core once the other slot is done.

`make test` runs one-thread jobs two at a time, because three busy threads on two cores stall each other's OpenMP
barriers (docs/benchmarks.md, "How make test is shaped"). The chain 05 -> 08 -> 09 is the longest job and ends
minutes after the other slot's last job, with one core idle. That job's kernels load this file (the Makefile copies
it into a private IPYTHONDIR's start-up folder): before each cell, once the file named by ``FTLIB_ALONE_STAMP``
exists (the other slot's last job writes it when it ends), torch gets two threads. It prints nothing, so no cell's
output changes; the checked cells print only what holds at any thread count.
"""
import os
import sys


def _two_threads_when_alone(*_args) -> None:
    stamp = os.environ.get("FTLIB_ALONE_STAMP")
    if not stamp or not os.path.exists(stamp) or "torch" not in sys.modules:
        return
    torch = sys.modules["torch"]
    if torch.get_num_threads() < 2:
        torch.set_num_threads(2)  # in the kernel's main thread, where the cells run (OpenMP's count is per thread)
    get_ipython().events.unregister("pre_run_cell", _two_threads_when_alone)  # noqa: F821 (IPython's global)


get_ipython().events.register("pre_run_cell", _two_threads_when_alone)  # noqa: F821 (IPython's global)
