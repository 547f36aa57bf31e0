"""The measurement harnesses built on the runtime: the benchmark suites of ``avparse bench``
(``bench_core``, ``bench_extract``, ``bench_train``, ``bench_live``, ``bench_gpu``), the soak
(``soak``) and scoring through the live runtime (``live_eval``), sharing one timing and
percentile module (``timing``), one description of the machine (``machine``) and one report
writer (``report``).
"""
