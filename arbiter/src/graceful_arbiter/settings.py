"""The graceful arbiter's settings, registered as ordinary gunicorn settings (section "Graceful").

Importing this module registers them with gunicorn, so they are accepted in gunicorn.conf.py, on the
command line and in GUNICORN_CMD_ARGS of `graceful-gunicorn`, and listed by `--check-config`.
Stock `gunicorn` ignores unknown names in a config file, so a config written for the graceful
arbiter still loads there (without the behaviour).
"""

from __future__ import annotations

from gunicorn import config as _config

SECTION = "Graceful"


def _validate_non_negative_number(val):
    if isinstance(val, bool):
        raise TypeError(f"Not a number: {val!r}")
    number = float(val)
    if number < 0:
        raise ValueError(f"Value must not be negative: {val}")
    return number


def _validate_optional_non_negative_number(val):
    if val is None or val == "":
        return None
    return _validate_non_negative_number(val)


def _validate_positive_int(val):
    number = _config.validate_pos_int(val)
    if number < 1:
        raise ValueError(f"Value must be at least 1: {val}")
    return number


def _validate_bytes(val):
    """An integer number of bytes; a string may end in K, M or G (binary multiples)."""
    if isinstance(val, bool):
        raise TypeError(f"Not a size: {val!r}")
    if isinstance(val, int):
        number = val
    else:
        text = str(val).strip().upper().removesuffix("B").removesuffix("I")
        scale = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(text[-1:], 1)
        number = int(float(text.rstrip("KMG")) * scale)
    if number < 0:
        raise ValueError(f"Value must not be negative: {val}")
    return number


def _validate_memory_metric(val):
    metric = _config.validate_string(val).lower()
    if metric not in ("pss", "rss"):
        raise ValueError(f"worker_max_memory_metric must be pss or rss, not {val!r}")
    return metric


def _validate_health_path(val):
    path = _config.validate_string(val)
    if not path:
        return None
    if not path.startswith("/"):
        raise ValueError(f"worker_health_path must start with '/': {val!r}")
    return path


class WorkerRefreshInterval(_config.Setting):
    name = "worker_refresh_interval"
    section = SECTION
    cli = ["--worker-refresh-interval"]
    meta = "SECONDS"
    validator = _validate_non_negative_number
    type = float
    default = 0
    desc = """\
        Replace every worker, batch by batch, this many seconds after the last refresh (0: never).

        A refresh spawns new workers first and retires the oldest ones only once the new ones are
        ready, so capacity never drops. A random delay of up to ``worker_refresh_jitter`` is added.
        """


class WorkerRefreshJitter(_config.Setting):
    name = "worker_refresh_jitter"
    section = SECTION
    cli = ["--worker-refresh-jitter"]
    meta = "SECONDS"
    validator = _validate_optional_non_negative_number
    default = None
    desc = """\
        Largest random delay added to each periodic refresh, so a fleet does not recycle in lockstep.

        Unset: a tenth of ``worker_refresh_interval``.
        """


class WorkerRefreshBatchSize(_config.Setting):
    name = "worker_refresh_batch_size"
    section = SECTION
    cli = ["--worker-refresh-batch-size"]
    meta = "INT"
    validator = _validate_positive_int
    type = int
    default = 1
    desc = """\
        How many extra workers a refresh boots at a time, before retiring as many of the oldest.
        """


class WorkerBootTimeout(_config.Setting):
    name = "worker_boot_timeout"
    section = SECTION
    cli = ["--worker-boot-timeout"]
    meta = "SECONDS"
    validator = _validate_non_negative_number
    type = float
    default = 120
    desc = """\
        Seconds a new worker may take from fork to ready (app loaded and health call answered).

        A worker that misses it is killed: at first start the server stops, later the refresh
        in progress is aborted and the old workers keep serving.
        """


class WorkerHealthPath(_config.Setting):
    name = "worker_health_path"
    section = SECTION
    cli = ["--worker-health-path"]
    meta = "PATH"
    validator = _validate_health_path
    default = None
    desc = """\
        Path (with an optional query) that each new worker requests from its own app, in-process,
        before it reports ready. Any 2xx or 3xx answer is ready; anything else fails the worker.

        WSGI workers call the app with a synthetic environ; ASGI workers (``asgi``,
        ``uvicorn_worker.UvicornWorker``) call it with a synthetic scope once lifespan startup has
        completed and before the worker starts serving. Unset: ready once the app is loaded.
        """


class WorkerHealthHost(_config.Setting):
    name = "worker_health_host"
    section = SECTION
    cli = ["--worker-health-host"]
    meta = "HOST"
    validator = _config.validate_string
    default = "localhost"
    desc = """\
        Host header of the in-process health call (apps that check allowed hosts need a valid one).
        """


class WorkerRefreshBackoff(_config.Setting):
    name = "worker_refresh_backoff"
    section = SECTION
    cli = ["--worker-refresh-backoff"]
    meta = "SECONDS"
    validator = _validate_non_negative_number
    type = float
    default = 30
    desc = """\
        Delay after a failed refresh or a failed worker boot before an automatic retry; it doubles
        with each consecutive failure, up to 32 times this value. Explicit requests (HUP, the
        ``graceful refresh`` command, a changed watched file) do not wait for it.
        """


class WorkerMaxMemory(_config.Setting):
    name = "worker_max_memory"
    section = SECTION
    cli = ["--worker-max-memory"]
    meta = "BYTES"
    validator = _validate_bytes
    type = str
    default = 0
    desc = """\
        Replace a worker whose memory (see ``worker_max_memory_metric``) exceeds this many bytes,
        through the same spawn-first refresh (0: no ceiling). Accepts suffixes K, M and G.
        """


class WorkerMaxMemoryMetric(_config.Setting):
    name = "worker_max_memory_metric"
    section = SECTION
    cli = ["--worker-max-memory-metric"]
    meta = "STRING"
    validator = _validate_memory_metric
    default = "pss"
    desc = """\
        Which memory figure ``worker_max_memory`` applies to: ``pss`` (proportional set size, shared
        pages divided among their users) or ``rss``. Read from /proc/PID/smaps_rollup.
        """


class WorkerRefreshOnChange(_config.Setting):
    name = "worker_refresh_on_change"
    section = SECTION
    action = "append"
    cli = ["--worker-refresh-on-change"]
    meta = "PATH"
    validator = _config.validate_list_string
    default = []
    desc = """\
        Paths polled every two seconds (identity, size and modification time, symlinks followed and
        not); a change triggers a refresh. With ``preload_app`` new workers still run the master's
        copy of the code.
        """


class WorkerGcFreeze(_config.Setting):
    name = "worker_gc_freeze"
    section = SECTION
    cli = ["--no-worker-gc-freeze"]
    validator = _config.validate_bool
    action = "store_false"
    default = True
    desc = """\
        With ``preload_app``, call ``gc.freeze()`` in the master right before each fork, so that the
        workers' garbage collector does not write to (and unshare) the pages of preloaded objects;
        and end each worker without the interpreter's teardown (atexit handlers still run), which
        would write to every shared object on the way out.
        """


class WorkerPreimport(_config.Setting):
    name = "worker_preimport"
    section = SECTION
    action = "append"
    cli = ["--worker-preimport"]
    meta = "MODULE"
    validator = _config.validate_list_string
    default = []
    desc = """\
        With ``preload_app``, modules the master imports before forking, so workers share them
        instead of each importing its own copy. ``auto`` stands for the modules the configured
        worker class would otherwise import lazily in each worker.
        """


class WorkerPreloadWarmup(_config.Setting):
    name = "worker_preload_warmup"
    section = SECTION
    cli = ["--worker-preload-warmup"]
    validator = _config.validate_bool
    action = "store_true"
    default = False
    desc = """\
        With ``preload_app``, the master calls the app once on ``worker_health_path``, in-process,
        before it forks, so that what the app builds on its first request (routing and validation
        tables, caches) is shared by the workers instead of built again in each; once, at start.
        An ASGI app is called without lifespan, on an event loop of its own that is closed
        afterwards; an error answer is logged and ignored. Leave it off for an app whose first
        request opens connections, starts threads or creates objects bound to its event loop
        (async clients, locks, queues): the workers would inherit them.
        """


_ADDED = (
    WorkerRefreshInterval,
    WorkerRefreshJitter,
    WorkerRefreshBatchSize,
    WorkerBootTimeout,
    WorkerHealthPath,
    WorkerHealthHost,
    WorkerRefreshBackoff,
    WorkerMaxMemory,
    WorkerMaxMemoryMetric,
    WorkerRefreshOnChange,
    WorkerGcFreeze,
    WorkerPreimport,
    WorkerPreloadWarmup,
)

#: The names of the settings this package adds to gunicorn, for validators outside the master.
SETTING_NAMES: tuple[str, ...] = tuple(setting.name for setting in _ADDED)
