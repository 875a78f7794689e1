"""The model-family contract (``pipelines/families/base.py``): every catalogued family provides it, and the
generic code asks the family instead of naming one."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from pipelines.families import base, catalogue
from pipelines.families.catalogue import CATALOGUE, DEFAULT_MODEL, FAMILIES, family_of, get_spec, models_for

ROOT = Path(__file__).resolve().parents[1]


def _names(protocol) -> set[str]:
    names = set()
    for klass in protocol.__mro__:
        if klass in (object,) or not getattr(klass, "_is_protocol", False):
            continue
        names |= set(getattr(klass, "__annotations__", {}))
        names |= {name for name, value in vars(klass).items() if callable(value) and not name.startswith("_")}
    return names


def _video(family) -> bool:
    return any(spec.task in ("t2v", "i2v") for spec in family.SPECS)


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.NAME)
def test_every_family_has_the_declarations(family):
    for name in ("NAME", "SPECS", "DEFAULTS"):
        assert hasattr(family, name), f"{family.__name__} lacks {name}"
    assert all(spec.family == family.NAME for spec in CATALOGUE.values() if spec.id in {s.id for s in family.SPECS})
    if _video(family):
        missing = sorted(name for name in _names(base.VideoFamily) if not hasattr(family, name))
        assert not missing, f"{family.__name__} lacks {', '.join(missing)} (see pipelines/families/base.py)"
        for spec in family.SPECS:
            assert spec.demo_kind in family.DEMO_BUILDERS, f"{spec.id}: no demo build {spec.demo_kind!r}"


def test_defaults_come_from_the_families_and_lead_their_lists():
    assert DEFAULT_MODEL["t2v"] == "wan2.1-t2v-1.3b" and DEFAULT_MODEL["i2v"] == "i2vgen-xl"
    for task, model in DEFAULT_MODEL.items():
        assert models_for(task)[0].family == get_spec(model).family


def test_frame_rules_are_the_familys():
    wan, unet = family_of("wan2.1-i2v-14b-480p"), family_of("i2vgen-xl")
    assert wan.fit_frames(get_spec("wan2.1-i2v-14b-480p"), 16) == (17, "Wan makes 4n+1 frames: 16 became 17.")
    assert wan.fit_frames(get_spec("wan2.1-i2v-14b-480p"), 81) == (81, None)
    assert unet.fit_frames(get_spec("i2vgen-xl"), 16) == (16, None)
    assert base.size_multiple(unet, get_spec("i2vgen-xl")) == 32
    assert base.size_multiple(wan, get_spec("wan2.2-ti2v-5b-i2v")) == 32
    assert base.fp32_components(wan, get_spec("wan2.1-t2v-1.3b")) == ("vae",)
    assert base.fp32_components(wan, get_spec("wan2.1-i2v-14b-480p")) == ("vae", "image_encoder")
    assert base.fp32_components(unet, get_spec("i2vgen-xl")) == ()


def test_generic_code_never_branches_on_a_family_name():
    """Outside ``families/`` (and Wan-only context parallelism), no module compares with a family's name."""
    names = [family.NAME for family in FAMILIES]
    files = subprocess.run(["git", "ls-files", "pipelines/*.py"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    pattern = re.compile(r"""[=!]=\s*["'](%s)["']|["'](%s)["']\s*[=!]=""" % ("|".join(names), "|".join(names)))
    offenders = [f"{path}:{number}" for path in files if not path.startswith("pipelines/families/")
                 for number, line in enumerate((ROOT / path).read_text(encoding="utf-8").splitlines(), 1)
                 if pattern.search(line)]
    assert not offenders, offenders
    assert catalogue.family_of("i2vgen-xl").NAME == "i2vgen"
