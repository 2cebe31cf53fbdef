"""GPUs in the daemon: ``inventory`` reads them (NVML, fake or none), ``placement`` decides which
a job may take (pure), ``manager`` holds the state: who holds which GPU, when to poll.
"""
