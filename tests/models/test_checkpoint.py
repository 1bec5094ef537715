"""The shared checkpoint loader: wrappers, prefixes, formats, refusals (tiny module, fast)."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file
from srdeploy.models._testing import TinyLocalSR, seeded_state_dict
from srdeploy.models.checkpoint import load_into, read_checkpoint

from srdeploy.errors import CheckpointError


class _Evil:
    def __reduce__(self):
        return (print, ("this would run arbitrary code",))


@pytest.fixture()
def sd() -> dict[str, torch.Tensor]:
    return seeded_state_dict(TinyLocalSR(2).state_dict(), seed=5)


def _check(path, expected) -> None:
    m = TinyLocalSR(2, seed=0)
    load_into(m, read_checkpoint(path), "tiny x2", str(path))
    for k, v in m.state_dict().items():
        assert torch.equal(v, expected[k]), k


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: s,
        lambda s: {f"module.{k}": v for k, v in s.items()},
        lambda s: {"params": {k: v * 0 for k, v in s.items()}, "params_ema": s},
        lambda s: {"params": s},
        lambda s: {"state_dict": {f"generator.{k}": v for k, v in s.items()}, "meta": {"epoch": 3}},
    ],
    ids=["plain", "module-prefix", "basicsr-ema-preferred", "basicsr-params", "mmcv"],
)
def test_wrappers(tmp_path, sd, wrap) -> None:
    p = tmp_path / "ck.pth"
    torch.save(wrap(sd), p)
    _check(p, sd)


def test_legacy_pickle_and_safetensors(tmp_path, sd) -> None:
    p = tmp_path / "legacy.pt"
    torch.save(sd, p, _use_new_zipfile_serialization=False)
    _check(p, sd)
    s = tmp_path / "w.safetensors"
    save_file(sd, str(s))
    _check(s, sd)


def test_arbitrary_code_is_refused(tmp_path, sd) -> None:
    p = tmp_path / "evil.pth"
    torch.save({"params": sd, "extra": _Evil()}, p)
    with pytest.raises(CheckpointError, match="arbitrary pickled code"):
        read_checkpoint(p)
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(CheckpointError):
        read_checkpoint(raw)


def test_corrupt_and_missing_files(tmp_path, sd) -> None:
    p = tmp_path / "ok.pth"
    torch.save(sd, p)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        read_checkpoint(cut)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pth")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="safetensors"):
        read_checkpoint(bad)


def test_mismatch_names_keys(tmp_path, sd) -> None:
    other = seeded_state_dict(TinyLocalSR(3).state_dict(), seed=1)  # c2 has 27 outputs, not 12
    other["extra.weight"] = torch.zeros(1)
    del other["c1.bias"]
    with pytest.raises(CheckpointError) as exc:
        load_into(TinyLocalSR(2), other, "tiny x2", "ck.pth")
    msg = str(exc.value)
    assert "missing keys: c1.bias" in msg
    assert "unexpected keys: extra.weight" in msg
    assert "c2.weight (27, 8, 3, 3) vs (12, 8, 3, 3)" in msg


def test_nan_weights_are_corrupt(sd) -> None:
    sd = dict(sd)
    sd["c1.weight"] = sd["c1.weight"].clone()
    sd["c1.weight"][0, 0, 0, 0] = float("nan")
    with pytest.raises(CheckpointError, match="NaN"):
        load_into(TinyLocalSR(2), sd, "tiny x2", "ck.pth")


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: {"params-ema": s},
        lambda s: {f"netG.{k}": v for k, v in s.items()},
        lambda s: {"params_ema": {f"module.{k}": v for k, v in s.items()}},
    ],
    ids=["params-ema", "netG-prefix", "ema-module"],
)
def test_more_wrappers(tmp_path, sd, wrap) -> None:
    p = tmp_path / "ck.pth"
    torch.save(wrap(sd), p)
    _check(p, sd)


def test_prefix_stripped_only_when_every_key_has_it(tmp_path, sd) -> None:
    # module.c1.weight next to c1.weight: stripping per key would collapse them into one
    first = next(iter(sd))
    mixed = {f"module.{k}" if k == first else k: v for k, v in sd.items()}
    mixed[first] = torch.zeros_like(sd[first])
    p = tmp_path / "mixed.pth"
    torch.save(mixed, p)
    state = read_checkpoint(p)
    assert set(state) == set(mixed)  # nothing stripped, nothing lost
    with pytest.raises(CheckpointError, match="module"):
        load_into(TinyLocalSR(2, seed=0), state, "tiny x2", str(p))


def test_declared_wrapper_is_honoured(tmp_path, sd) -> None:
    p = tmp_path / "ck.pth"
    torch.save({"params": {k: v * 0 for k, v in sd.items()}, "params_ema": sd}, p)
    got = read_checkpoint(p, wrapper="params")  # declared: params, although params_ema exists
    assert all(torch.equal(got[k], sd[k] * 0) for k in sd)
    with pytest.raises(CheckpointError, match="declares wrapper 'mmcv-generator'"):
        read_checkpoint(p, wrapper="mmcv-generator")
    torch.save(sd, p)
    with pytest.raises(CheckpointError, match="declares wrapper 'params_ema'"):
        read_checkpoint(p, wrapper="params_ema")
