"""CPU test fixtures. `fake_adapter` stands in for the GPU parts of jitlab._triton (loading a
binary, the launcher) while keeping Triton's real binder/specialization rules, so the cache
logic is checked against what Triton itself would pick, without a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from jitlab._triton import adapter as adapter_mod

from ..support import free_port, subprocess_env  # noqa: F401 - the suite imports them from here


class FakeKernel:
    def __init__(self, key: str, log: list):
        self.key, self.log = key, log
        self.name = "fake"

    def launch_metadata(self, grid, stream, *args):
        return {"name": self.name, "grid": grid, "stream": stream, "key": self.key}


class FakeAdapter(adapter_mod.Adapter):
    """Real Triton specialization (offline CUDA sm90 binder), fake binary and launcher."""

    def __init__(self):
        super().__init__()
        self.device = 0
        self.device_constant = None  # several devices, also on a one-GPU host: the key reads the getter
        self.get_device = lambda: self.device
        self.get_stream = lambda d: 1000 + d
        self.compiles: list[str] = []
        self.launches: list[dict] = []
        self._binders: dict = {}

    def binder(self, jit_fn, device):
        b = self._binders.get(id(jit_fn))
        if b is None:
            b = self._binders[id(jit_fn)] = adapter_mod.offline_binder(jit_fn)
        return b

    def triton_key(self, jit_fn, args, kwargs) -> str:
        spec, options = self.specialization(jit_fn, self.device, args, kwargs)
        return f"dev{self.device}:{spec}{sorted(options.items())}"

    def compile(self, fn, grid, args, kwargs):
        fn.cache_key  # noqa: B018 - as Triton's compile does: records the globals the kernel reads
        key = self.triton_key(fn, args, kwargs)
        self.compiles.append(key)
        launches = self.launches

        def run(g0, g1, g2, stream, function, packed, md, enter, exit, *vals):
            if enter is not None:
                enter(md)
            launches.append({"key": key, "grid": (g0, g1, g2), "stream": stream, "vals": vals, "md": md})
            if exit is not None:
                exit(md)

        return adapter_mod.Compiled(kernel=FakeKernel(key, launches), run=run, function=1234,
                                    packed_metadata=(4, 1, 0), name=fn.__name__)

    @staticmethod
    def launch_metadata(compiled, grid, stream, values):
        return compiled.kernel.launch_metadata(grid, stream, *values)

    def run_triton(self, kernel, grid, kwargs):
        """Triton's run() on the fake binary: its used-globals check (same error), then its key."""
        changed = self.used_globals_changed(kernel)
        if changed:
            raise RuntimeError(f"Global variable {changed} has changed since we compiled this kernel")
        g = grid(kwargs) if callable(grid) else grid
        self.launches.append({"key": self.triton_key(kernel, (), kwargs), "grid": tuple(g), "via": "triton",
                              "stream": self.get_stream(self.device), "vals": None, "md": None})


@pytest.fixture(params=["python", "native"])
def fake_adapter(request, monkeypatch):
    """The fake adapter, once with the generated Python hit path (JITLAB_LAUNCHER=python, the reference)
    and once with the C++ dispatcher in front of it (built here if needed; skipped where it cannot be)."""
    import dataclasses

    from jitlab import settings

    if request.param == "native":
        from jitlab._triton import native

        mod, why = native.DISPATCH.get(wait=True)
        if mod is None:
            pytest.skip(why)
    else:
        monkeypatch.setattr(settings, "SETTINGS", dataclasses.replace(settings.SETTINGS, launcher="python"))
    yield install_fake_adapter(monkeypatch)
    adapter_mod.reset()


def install_fake_adapter(monkeypatch) -> FakeAdapter:
    """Make a FakeAdapter jitlab's adapter for the rest of the test."""
    fake = FakeAdapter()
    monkeypatch.setattr(adapter_mod, "_ADAPTER", fake)
    monkeypatch.setattr(adapter_mod, "_REASON", None)
    return fake


OTEL_VARS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED",
    "JITLAB_TRACE", "JITLAB_TRACE_SAMPLE", "JITLAB_TRACE_FILE", "JITLAB_RECORDER_CAPACITY",
)


@pytest.fixture
def clean_otel_env(monkeypatch):
    """No OTEL_*/JITLAB_TRACE* from the caller's environment, no recorder active, warnings re-armed."""
    from jitlab import settings
    from jitlab.telemetry import export
    from jitlab.telemetry import recorder as R

    for v in OTEL_VARS:
        monkeypatch.delenv(v, raising=False)
    settings.reload()
    export._warned.clear()
    prev = R.activate(None)
    yield
    R.activate(prev)
    settings.reload()


@pytest.fixture
def no_gpu_driver(monkeypatch):
    """The condition "no active GPU driver" forced, also on a GPU host: the backend probe answers None."""
    from jitlab._triton import probe

    adapter_mod.reset()
    monkeypatch.setattr(probe, "active_backend", lambda: None)
    yield
    adapter_mod.reset()


VLLM_DIR = Path(__file__).resolve().parents[2] / ".vllm"


@pytest.fixture(scope="session")
def vllm_dir():
    """vLLM 0.26.0's kernel files in `.vllm/` (jitlab.vllm.kernel_files: built once from the wheel, ~4 s),
    importable in this process; skipped with the reason when the wheel cannot be downloaded."""
    from jitlab.vllm import kernel_files

    try:
        kernel_files.build(VLLM_DIR)
    except RuntimeError as e:
        pytest.skip(str(e))
    kernel_files.activate(VLLM_DIR)
    return VLLM_DIR
