"""`inkstand keys` and `inkstand usage` as commands: output for people and for scripts, and
their refusals (exit status 2 with a message, never a traceback)."""

import json
import re

import pytest

from inkstand.admin import parse_when
from inkstand.cli import main
from inkstand.config import ConfigError
from inkstand.store import UsageLog, UsageRecord, open_store


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_create_list_revoke_and_usage(tmp_path, capsys):
    where = ("--data-dir", str(tmp_path))
    status, out, _ = run(capsys, "keys", "create", "--name", "ci", "--models", "palmyra-x5, x",
                         "--rpm", "5", "--expires", "2999-01-01", "--json", *where)  # fmt: skip
    assert status == 0
    made = json.loads(out)
    status, out, _ = run(capsys, "keys", "list", "--json", *where)
    (listed,) = json.loads(out)
    assert made["secret"] not in out
    assert (listed["id"], listed["models"], listed["rpm"], listed["tpm"]) == (
        made["id"], ["palmyra-x5", "x"], 5, None,
    )  # fmt: skip
    assert listed["expires_at"].startswith("2999-01-01T00:00:00")
    status, out, _ = run(capsys, "keys", "list", *where)
    assert made["id"] in out and made["secret"] not in out
    assert run(capsys, "keys", "revoke", made["id"], *where)[0] == 0
    assert run(capsys, "keys", "revoke", made["id"], *where)[0] == 1
    status, out, _ = run(capsys, "usage", "--json", "--by", "key", *where)
    assert (status, json.loads(out)) == (0, [])


@pytest.mark.parametrize(
    "argv",
    [
        ("keys", "create", "--name", "x", "--rpm", "-1"),
        ("keys", "create", "--name", "x", "--expires", "next week"),
        ("usage", "--since", "yesterday"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(tmp_path, capsys, argv):
    status, _, err = run(capsys, *argv, "--data-dir", str(tmp_path))
    assert status == 2 and err.startswith("inkstand: ") and "Traceback" not in err


def test_parse_when_reads_dates_and_times_as_utc():
    assert parse_when("2027-01-01") == "2027-01-01T00:00:00.000+00:00"
    assert parse_when("2027-01-01T12:00:00+02:00") == "2027-01-01T10:00:00.000+00:00"
    assert parse_when("2027-01-01T12:00:00Z") == "2027-01-01T12:00:00.000+00:00"
    with pytest.raises(ConfigError):
        parse_when("soon")


def test_the_commands_need_no_model_file(tmp_path, capsys):
    config = tmp_path / "c.toml"
    data = tmp_path / "from-config"
    config.write_text(f'data_dir = "{data}"\n[models.palmyra-x5]\npath = "/nowhere/x.gguf"\n')
    status, out, _ = run(capsys, "keys", "create", "--name", "a", "--json", "--config", str(config))
    assert status == 0 and json.loads(out)["id"]
    assert (data / "inkstand.sqlite3").is_file()


def test_usage_prune_deletes_records_before_a_date_and_says_how_many(tmp_path, capsys):
    store = open_store(str(tmp_path))
    log = UsageLog(store)
    for day in ("2026-01-01", "2026-01-02", "2026-02-01"):
        record = UsageRecord(
            f"{day}T08:00:00.000+00:00", "k", "m", "/v1/chat", 1, 0, 1, 1, 200, None
        )
        log.record(record).result()
    store.close()
    where = ("--data-dir", str(tmp_path))
    status, out, _ = run(capsys, "usage", "prune", "--before", "2026-01-15", *where)
    assert status == 0
    assert re.search(r"\b2\b", out) and "2026-01-15" in out
    status, out, _ = run(capsys, "usage", *where, "prune", "--before", "2026-01-15")
    assert status == 0 and re.search(r"\b0\b", out)
    status, out, _ = run(capsys, "usage", "--json", *where)
    assert json.loads(out)[0]["requests"] == 1


@pytest.mark.parametrize("before", ["last month", "2026-13-01", ""])
def test_usage_prune_refuses_a_bad_date_and_deletes_nothing(tmp_path, capsys, before):
    store = open_store(str(tmp_path))
    UsageLog(store).record(
        UsageRecord("2000-01-01T00:00:00.000+00:00", "k", "m", "/v1/chat", 1, 0, 1, 1, 200, None)
    ).result()
    store.close()
    status, _, err = run(capsys, "usage", "prune", "--before", before, "--data-dir", str(tmp_path))
    assert status == 2 and err.startswith("inkstand: ") and "Traceback" not in err
    assert "YYYY-MM-DD" in err
    store = open_store(str(tmp_path))
    assert len(UsageLog(store).rows()) == 1
    store.close()
