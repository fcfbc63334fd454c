"""Property-based: whatever a config, search-space or protocol file holds, the answer is a result or a clear error."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cbl.config import ConfigError, ExperimentConfig, apply_overrides, flat_keys
from cbl.data import read_asvspoof2019
from cbl.errors import ProtocolError
from cbl.sweep.space import SearchSpace, parse_search_space

KEYS = sorted(flat_keys())
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6,
)
keys = st.one_of(
    st.sampled_from(KEYS),
    st.text(max_size=16),
    st.sampled_from(KEYS).map(lambda k: k + "x"),
    st.sampled_from(["data", "loss", "model"]),
)
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(st.dictionaries(keys, values, max_size=5))
def test_any_override_mapping_gives_a_config_or_a_config_error(data):
    try:
        config = apply_overrides(ExperimentConfig(), data)
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert isinstance(config, ExperimentConfig)


distribution = st.one_of(
    st.fixed_dictionaries({"choice": st.lists(scalars, max_size=4)}),
    st.fixed_dictionaries({"grid": st.lists(scalars, max_size=4)}),
    st.fixed_dictionaries({"uniform": st.lists(scalars, max_size=3)}),
    st.fixed_dictionaries({"loguniform": st.lists(st.floats(-1, 1), max_size=3)}),
    st.fixed_dictionaries({"int": st.lists(st.integers(-3, 30), max_size=3)}),
    st.fixed_dictionaries(
        {
            "choice": st.lists(scalars, min_size=1, max_size=3),
            "when": st.dictionaries(st.sampled_from(KEYS), st.lists(scalars, max_size=2), max_size=2),
        }
    ),
    values,
)
space_files = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.text(max_size=10), scalars),
        "metric": st.sampled_from(["dev_eer", "acc", 3]),
        "mode": st.sampled_from(["min", "max", "up"]),
        "fixed": st.dictionaries(keys, values, max_size=3),
        "space": st.dictionaries(keys, distribution, max_size=4),
        "search": st.dictionaries(
            st.sampled_from(["algorithm", "num_samples", "seed", "max_concurrent", "x"]),
            st.one_of(scalars, st.sampled_from(["optuna", "grid", "random"])),
            max_size=4,
        ),
        "scheduler": st.dictionaries(
            st.sampled_from(["name", "grace_period", "reduction_factor", "max_t"]),
            st.one_of(scalars, st.sampled_from(["asha", "none"])),
            max_size=4,
        ),
        "resources": st.dictionaries(st.sampled_from(["cpu", "gpu"]), scalars, max_size=2),
        "demo": st.one_of(scalars, st.dictionaries(st.sampled_from(["space", "search", "bogus"]), values, max_size=2)),
    },
)


@PROPERTY
@given(space_files)
def test_any_search_space_gives_a_space_or_a_config_error(data):
    try:
        spec = parse_search_space(data, source="s.yaml")
    except ConfigError as exc:
        assert str(exc).startswith("s.yaml") and "\n" not in str(exc)
    else:
        assert isinstance(spec, SearchSpace)


@PROPERTY
@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=300))
def test_any_yaml_text_as_a_search_space_file(tmp_path_factory, text):
    from cbl.sweep.space import load_search_space

    path = Path(tmp_path_factory.mktemp("prop")) / "space.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_search_space(path)
    except ConfigError as exc:
        assert "\n" not in str(exc)


line = st.one_of(
    st.lists(
        st.sampled_from(
            [
                "LA_0079",
                "LA_T_1",
                "LA_T_2",
                "-",
                "A01",
                "bonafide",
                "spoof",
                "../x",
                "/etc/passwd",
                "x y",
                "",
                "\t",
                "\ufeff",
                "fake",
            ]
        ),
        max_size=6,
    ).map(" ".join),
    st.text(max_size=40),
)


@PROPERTY
@given(st.lists(line, max_size=8), st.sampled_from(["\n", "\r\n"]))
def test_any_protocol_text_gives_records_or_a_protocol_error(tmp_path_factory, lines, newline):
    folder = Path(tmp_path_factory.mktemp("proto"))
    audio = folder / "flac"
    audio.mkdir()
    for utt in ("LA_T_1", "LA_T_2"):
        (audio / f"{utt}.flac").write_bytes(b"")  # existence is all the reader checks
    protocol = folder / "p.txt"
    protocol.write_text(newline.join(lines), encoding="utf-8")
    try:
        records = read_asvspoof2019(protocol, audio)
    except ProtocolError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        for record in records:
            assert record.label in (0, 1)
            assert Path(record.path).resolve().parent == audio.resolve()


def test_yaml_round_trip_of_a_real_file_is_stable(tmp_path):
    """A sanity anchor for the properties above: a valid file loads."""
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"space": {"loss.alpha": {"choice": [1.0, 2.0]}}}))
    from cbl.sweep.space import load_search_space

    assert load_search_space(path).keys == ["loss.alpha"]
