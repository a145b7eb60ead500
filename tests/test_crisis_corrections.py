"""The columnist corrects the crisis flag, from the CLI and the web desk; each correction is a labelled example.

Threads are made the real way (letters over SMTP to a running service), the
corrections go through the real CLI and the real web app, and the tests look
at the SQLite file: the thread's flag, one ``crisis_labels`` row per
correction holding the letter's row id and never its text, and nothing left
after ``mailer forget``.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO, rows
from test_desk_cli import fresh, run  # noqa: F401 - the fixture is used by name
from test_desk_web import csrf_of, desk_client, log_in


def labels(config) -> list:
    return rows(config.storage.database, "SELECT * FROM crisis_labels ORDER BY id")


def test_cli_marks_a_missed_letter_urgent_and_keeps_the_label(fresh):  # noqa: F811
    config, ids, config_file = fresh
    assert rows(config.storage.database, "SELECT urgent FROM threads WHERE id = ?", [ids["dana"]])[0]["urgent"] == 0
    result = run(config_file, "threads", "urgent", str(ids["dana"]), "--by", "the columnist")
    assert result.exit_code == 0, result.output
    assert "is now urgent" in result.output and "the detector disagrees" in result.output
    assert rows(config.storage.database, "SELECT urgent FROM threads WHERE id = ?", [ids["dana"]])[0]["urgent"] == 1
    [label] = labels(config)
    latest_letter = rows(config.storage.database,
                         "SELECT id FROM messages WHERE thread_id = ? AND kind = 'letter' ORDER BY created_at DESC, id DESC",
                         [ids["dana"]])[0]["id"]
    assert (label["message_id"], label["label"], label["detector_urgent"], label["labelled_by"]) == (
        latest_letter, "urgent", 0, "the columnist")
    assert label["labelled_at"]
    # The example is the letter's id and the label: no column holds its words.
    assert set(dict(label)) == {"id", "message_id", "label", "detector_urgent", "labelled_by", "labelled_at"}


def test_cli_clears_a_false_alarm_and_says_the_detector_agreed_before(fresh):  # noqa: F811
    config, ids, config_file = fresh
    assert rows(config.storage.database, "SELECT urgent FROM threads WHERE id = ?", [ids["sam"]])[0]["urgent"] == 1
    result = run(config_file, "threads", "not-urgent", str(ids["sam"]))
    assert result.exit_code == 0, result.output
    assert "is now not urgent" in result.output
    assert rows(config.storage.database, "SELECT urgent FROM threads WHERE id = ?", [ids["sam"]])[0]["urgent"] == 0
    [label] = labels(config)
    assert label["label"] == "not-urgent" and label["detector_urgent"] == 1
    assert label["labelled_by"].startswith("cli:")


def test_cli_names_a_thread_that_does_not_exist(fresh):  # noqa: F811
    config, _ids, config_file = fresh
    result = run(config_file, "threads", "urgent", "9999")
    assert result.exit_code != 0
    assert "9999" in result.output
    assert labels(config) == []


def test_web_desk_button_marks_urgent_and_back_with_the_sessions_token(fresh):  # noqa: F811
    config, ids, _config_file = fresh
    with desk_client(config) as client:
        log_in(client)
        page = client.get(f"/threads/{ids['dana']}").text
        assert f'action="/threads/{ids["dana"]}/urgent"' in page and "Mark urgent" in page
        token = csrf_of(page)
        forged = client.post(f"/threads/{ids['dana']}/urgent", data={"urgent": "yes", "csrf": "forged-token"})
        assert forged.status_code == 403
        assert labels(config) == []
        marked = client.post(f"/threads/{ids['dana']}/urgent", data={"urgent": "yes", "csrf": token})
        assert marked.status_code == 303
        assert "Not urgent" in client.get(f"/threads/{ids['dana']}").text
        cleared = client.post(f"/threads/{ids['dana']}/urgent", data={"urgent": "no", "csrf": token})
        assert cleared.status_code == 303
        bad = client.post(f"/threads/{ids['dana']}/urgent", data={"urgent": "maybe", "csrf": token})
        assert bad.status_code == 400
    assert [(r["label"], r["labelled_by"]) for r in labels(config)] == [("urgent", "web desk"), ("not-urgent", "web desk")]
    assert rows(config.storage.database, "SELECT urgent FROM threads WHERE id = ?", [ids["dana"]])[0]["urgent"] == 0


def test_forget_erases_the_readers_labels_too(fresh):  # noqa: F811
    config, ids, config_file = fresh
    assert run(config_file, "threads", "not-urgent", str(ids["sam"])).exit_code == 0
    assert run(config_file, "threads", "urgent", str(ids["dana"])).exit_code == 0
    result = run(config_file, "forget", "sam.quill@example.net", "--yes")
    assert result.exit_code == 0, result.output
    assert "crisis_labels" in result.output
    left = labels(config)
    assert len(left) == 1 and left[0]["label"] == "urgent"  # Dana's label stays; Sam's is gone


def test_bench_reports_the_detector_on_an_archives_corrections(fresh):  # noqa: F811
    config, ids, config_file = fresh
    run(config_file, "threads", "urgent", str(ids["dana"]))
    run(config_file, "threads", "urgent", str(ids["sam"]))
    out = subprocess.run([sys.executable, str(REPO / "bench" / "crisis.py"), "--db", str(config.storage.database),
                          "--only-corrections"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "corrections in the archive: 2 (urgent 2, not urgent 0)" in out.stdout
    assert "recall on letters marked urgent: 1/2" in out.stdout


@pytest.mark.parametrize("command", [["threads", "urgent"], ["threads", "not-urgent"]], ids=lambda c: " ".join(c))
def test_correction_commands_have_help(command):
    from click.testing import CliRunner

    from mailer.cli import main
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0 and "labelled" in result.output
