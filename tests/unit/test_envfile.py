"""The env-file reader and writer: syntax, errors with line numbers, round trips, encryption."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stageflow.config.envfile import (
    ENCRYPTED_HEADER,
    EnvFileError,
    format_env,
    parse_env,
    parse_env_lines,
    quote_env_value,
    read_env_file,
    write_env_file,
    write_env_text,
)
from stageflow.errors import ConfigError

KEYS = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)
# Any text an environment variable can hold: everything but NUL (and lone surrogates, not UTF-8).
VALUES = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=60)
TRICKY = st.text(alphabet=" \t\n\r#='\"\\$`{}é😀\u2028\x0b\x85ab", max_size=30)
ENVS = st.dictionaries(KEYS, st.one_of(VALUES, TRICKY), max_size=12)


def test_basic_syntax() -> None:
    text = (
        "# a comment\n"
        "\n"
        "export A=plain value   # comment\n"
        "B = 'single # not a comment'\n"
        'C="double \\"q\\" \\$HOME \\\\ \\n end"  # trailing comment\n'
        "D=a#b\n"
        "E=#x\n"
        "F=\n"
        "G='it\\'s'\n"
        'H="tab\\there"\n'
        "I='lit \\n $x'\n"
        "J=crlf\r\n"
    )
    assert parse_env(text) == {
        "A": "plain value",
        "B": "single # not a comment",
        "C": 'double "q" $HOME \\ \n end',
        "D": "a#b",
        "E": "#x",
        "F": "",
        "G": "it's",
        "H": "tab\there",
        "I": "lit \\n $x",
        "J": "crlf",
    }


def test_multiline_quoted_values_and_unknown_escapes() -> None:
    text = 'A="line one\nline two"\nB="keep \\q and \\u00e9"\nC=after\n'
    assert parse_env(text) == {"A": "line one\nline two", "B": "keep \\q and \\u00e9", "C": "after"}
    lines = parse_env_lines(text)
    assert [ln.lineno for ln in lines if ln.key] == [1, 3, 4]


def test_writer_escapes_what_compose_would_interpret() -> None:
    assert quote_env_value('a$b "c" \\ \n\r\t#=') == '"a\\$b \\"c\\" \\\\ \\n\\r\t#="'
    assert format_env({"K": "v", "EMPTY": ""}) == 'K="v"\nEMPTY=""\n'


def test_writer_rejects_nul_and_bad_keys() -> None:
    with pytest.raises(ValueError, match="NUL"):
        format_env({"A": "x\x00y"})
    with pytest.raises(ValueError, match="invalid environment variable name"):
        format_env({"1A": "x"})


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("A=1\nB=2\nnot a line\n", 3, "expected KEY=value"),
        ("A=1\n\n# c\nBARE\n", 4, "a name without '='"),
        ("A=1\n1BAD=x\n", 2, "expected KEY=value"),
        ("A=1\nB-C=x\n", 2, "no '=' after the name"),
        ('A=1\nB="open\nC=3\n', 2, "unterminated double-quoted value of B"),
        ("A='open\n", 1, "unterminated single-quoted value of A"),
        ('A=1\nB="x" junk\n', 2, "unexpected text after the closing quote of B"),
        ('A="multi\nline" junk\n', 2, "unexpected text after the closing quote of A"),
    ],
)
def test_errors_name_file_and_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(EnvFileError) as exc:
        parse_env(text, ".env.staging")
    assert exc.value.message.startswith(f".env.staging:{line}: ")
    assert fragment in exc.value.message
    assert isinstance(exc.value, ConfigError)  # exit code 2 in the CLI


def test_read_env_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / ".env.staging"
    path.write_text('A="ok"\nB="ok"\noops\n')
    with pytest.raises(EnvFileError, match=r"\.env\.staging:3: expected KEY=value"):
        read_env_file(path)
    assert read_env_file(tmp_path / ".env.missing") == {}


@given(ENVS)
def test_format_parse_round_trip(values: dict[str, str]) -> None:
    assert parse_env(format_env(values)) == values


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(ENVS)
def test_write_read_round_trip_and_mode(values: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / ".env.production"
        write_env_file(path, values)
        assert read_env_file(path) == values
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert os.listdir(d) == [".env.production"]  # no temporary file left behind


@given(
    st.lists(st.tuples(KEYS, st.one_of(VALUES, TRICKY)), max_size=8),
    st.integers(min_value=0, max_value=8),
    st.sampled_from(["this is not an assignment", "BARE_KEY", "9LIVES=x", "A-B=c", "=value", 'K="x" trailing']),
)
def test_malformed_line_is_reported_with_its_number(
    pairs: list[tuple[str, str]], where: int, bad: str
) -> None:
    lines = [f"{k}={quote_env_value(v)}" for k, v in pairs]  # one physical line each: newlines are escaped
    where = min(where, len(lines))
    lines.insert(where, bad)
    with pytest.raises(EnvFileError) as exc:
        parse_env("\n".join(lines) + "\n", ".env.staging")
    assert exc.value.message.startswith(f".env.staging:{where + 1}: ")


def test_comments_survive_a_lines_round_trip() -> None:
    from stageflow.config.envfile import format_env_lines

    text = '# head\n\nA="1"\n# mid\nB="x\\ny"\n'
    assert format_env_lines(parse_env_lines(text)) == text


def test_encrypted_file_is_read_transparently(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    env = {"STAGEFLOW_MASTER_KEY": key}
    path = tmp_path / ".env.production"
    write_env_file(path, {"SECRET_KEY": "s3cr3t-value-xyz", "DEBUG": "0"}, encrypt=True, environ=env)
    raw = path.read_text()
    assert raw.startswith(ENCRYPTED_HEADER + "\n")
    assert "s3cr3t-value-xyz" not in raw
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_env_file(path, environ=env) == {"SECRET_KEY": "s3cr3t-value-xyz", "DEBUG": "0"}
    # A second key in the list (rotation): the old key still decrypts.
    rotated = {"STAGEFLOW_MASTER_KEY": f"{Fernet.generate_key().decode()},{key}"}
    assert read_env_file(path, environ=rotated)["DEBUG"] == "0"


def test_encrypted_file_without_or_with_a_wrong_key(tmp_path: Path) -> None:
    path = tmp_path / ".env.production"
    write_env_text(path, 'A="1"\n', encrypt=True, environ={"STAGEFLOW_MASTER_KEY": Fernet.generate_key().decode()})
    with pytest.raises(ConfigError) as missing:
        read_env_file(path, environ={})
    assert "STAGEFLOW_MASTER_KEY" in missing.value.message and "\n" not in str(missing.value)
    with pytest.raises(ConfigError, match="cannot decrypt with STAGEFLOW_MASTER_KEY"):
        read_env_file(path, environ={"STAGEFLOW_MASTER_KEY": Fernet.generate_key().decode()})
    with pytest.raises(ConfigError, match="not a Fernet key") as bad:
        read_env_file(path, environ={"STAGEFLOW_MASTER_KEY": "not-a-key-but-secret"})
    assert "not-a-key-but-secret" not in str(bad.value)


def test_encrypting_without_a_key_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--encrypt needs STAGEFLOW_MASTER_KEY"):
        write_env_file(tmp_path / ".env.x", {"A": "1"}, encrypt=True, environ={})
    assert not (tmp_path / ".env.x").exists()


def test_loader_reads_encrypted_env_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stageflow.config.loader import load_env_context

    (tmp_path / "stageflow.yml").write_text(
        "project: demo\nservices: {web: {port: 8000}}\n"
        "database: {engine: postgres, password: '${POSTGRES_PASSWORD}'}\n"
        "environments: {production: {url: 'https://demo.example.com'}}\n"
    )
    key = Fernet.generate_key().decode()
    write_env_file(tmp_path / ".env.production", {"POSTGRES_PASSWORD": "pw-0123456789abcdef"}, encrypt=True,
                   environ={"STAGEFLOW_MASTER_KEY": key})
    monkeypatch.setenv("STAGEFLOW_MASTER_KEY", key)
    ctx = load_env_context(tmp_path, "production", environ={"STAGEFLOW_MASTER_KEY": key})
    assert "pw-0123456789abcdef" in ctx.app_vars["DATABASE_URL"]
