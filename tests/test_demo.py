"""The newcomer's demo: one command tells the whole story and leaves the files to look at."""

from __future__ import annotations

from click.testing import CliRunner

from conftest import rows
from mailer.cli import main


def run_demo(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--folder", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_demo_shows_the_acknowledgement_with_its_topic_links_and_the_thread(tmp_path):
    output = run_demo(tmp_path)

    assert "The acknowledgement" in output
    assert "Re: What is a therapist's job?" in output
    assert "https://column.example/topics/what-is-a-therapists-job" in output
    assert "The archived thread" in output and "acknowledgement" in output
    assert "stopped cleanly" in output
    # It leaves behind what it says it does: one letter, one acknowledgement, one thread.
    folder = tmp_path / "demo"
    assert "where everything is" in output and "mailer.db" in output
    assert len(list((folder / "maildir" / "new").iterdir())) == 1
    kinds = [r["kind"] for r in rows(folder / "mailer.db", "SELECT kind FROM messages ORDER BY id")]
    assert kinds == ["letter", "acknowledgement"]
    assert (folder / "mailer.log").read_text().count("accepted message") == 1


def test_demo_previews_the_digest_or_says_it_is_not_there_yet(tmp_path):
    output = run_demo(tmp_path)
    assert "The weekly digest, previewed" in output
    assert "digest preview: not available yet" in output or "Subject:" in output


def test_demo_without_the_digest_module_says_so_and_still_finishes(tmp_path, monkeypatch):
    monkeypatch.setattr("mailer.app.demo.DIGEST_MODULE", "mailer.digest_not_built_yet")
    output = run_demo(tmp_path)
    assert "digest preview: not available yet" in output
    assert "where everything is" in output
