"""The scaffolding every benchmark group shares, and nothing that imports crdtsync.

Workers of the ``local`` and ``store`` groups import this package, so it stays free
of crdtsync, websockets and the servers: a worker's memory and import time are part
of what it measures.

- :mod:`.machine`: what the numbers were measured on (platform, versions, commit,
  filesystem, load average);
- :mod:`.procfs`: CPU and memory of processes from ``/proc``;
- :mod:`.placement`: which cores the server and the load generators run on;
- :mod:`.processes`: child processes (start, pin, talk to by lines, stop);
- :mod:`.commands`: the worker side of that line conversation;
- :mod:`.outcome`: a run's status (ok or FAILED) and the summary of several runs;
- :mod:`.stats`: medians, ratios, percentiles;
- :mod:`.goals`: targets reported as met or not met;
- :mod:`.render`: markdown tables and number formats;
- :mod:`.group`: running a group (progress, results files).
"""
