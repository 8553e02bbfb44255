"""The sandbox that runs model-written code: the pool (``pool``), one worker process and its protocol
(``process``, ``worker``), and the isolation around it (``isolation``, ``cgroup``, ``procfs``)."""
