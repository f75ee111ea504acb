"""The app's own logging in forkserve's one stream: named and root loggers, prints, --log-config,
separate access and error logs and their rotation, gunicorn's access format, colours."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import httpx
import pytest

from tests.conftest import wait_until


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def wait_ready(path: Path, count: int = 1) -> None:
    """Workers log their startup into the log file, not the server's output."""

    def ready() -> bool:
        return path.exists() and path.read_text().count("Application startup complete.") >= count

    wait_until(
        ready, 15, f"{count} workers ready in {path.name}", lambda: path.read_text() if path.exists() else ""
    )


def answers(server, path: str) -> bool:
    try:
        return httpx.get(server.url + path, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def request(server, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    response = httpx.get(server.url + path, headers=headers, timeout=10)
    assert response.status_code == 200
    return response


@pytest.mark.parametrize("capture", [False, True])
def test_app_records_and_prints_are_tagged_text_in_the_log_file(serve, tmp_path, capture):
    log = tmp_path / "app.log"
    flags = ["--capture-output"] if capture else []
    server = serve("--log-file", str(log), *flags, app="applogger:app")
    wait_ready(log)
    request(server, "/t")
    tag = r"\[\d+\] \[worker 1 gen 1\]"
    wanted = [
        rf"{tag} \[INFO\] named info /t$",
        rf"{tag} \[WARNING\] named warning /t$",
        rf"{tag} \[INFO\] root info /t$",
        rf"{tag} \[WARNING\] root warning /t$",
    ]
    if capture:
        wanted += [rf"{tag} \[INFO\] printed /t$", rf"{tag} \[ERROR\] to stderr /t$"]

    def found() -> bool:
        text = log.read_text()
        return all(re.search(pattern, text, re.M) for pattern in wanted)

    wait_until(found, 10, "the app's records in --log-file", lambda: log.read_text())
    text = log.read_text()
    # Logged while the zygote imported the app: formatted too, not the bare last-resort text.
    assert re.search(r"\[zygote gen 1\] \[INFO\] named info at import$", text, re.M)
    assert "named debug" not in text
    if capture:
        assert "printed /t" not in server.log()
    else:
        # gunicorn's meaning: without --capture-output, print() stays on stdout.
        wait_until(lambda: "printed /t" in server.log(), 5, "print() on stdout")
        assert "printed /t" not in text


def test_app_records_and_prints_are_json_objects_under_log_format_json(serve, tmp_path):
    log = tmp_path / "app.log"
    server = serve("--log-format", "json", "--log-file", str(log), "--capture-output", app="applogger:app")
    wait_ready(log)
    request(server, "/j")

    def mine() -> list[dict]:
        objects = json_lines("\n".join(x for x in log.read_text().splitlines() if x.startswith("{")))
        return [line for line in objects if line["message"].endswith("/j")]

    wait_until(lambda: len(mine()) >= 6, 10, "six app lines", lambda: log.read_text())
    lines = {(line["logger"], line["level"], line["message"]) for line in mine()}
    assert lines == {
        ("applogger", "INFO", "named info /j"),
        ("applogger", "WARNING", "named warning /j"),
        ("root", "INFO", "root info /j"),
        ("root", "WARNING", "root warning /j"),
        ("forkserve.stdout", "INFO", "printed /j"),
        ("forkserve.stderr", "ERROR", "to stderr /j"),
    }
    assert {(line["role"], line["worker"], line["generation"]) for line in mine()} == {("worker", 1, 1)}
    # Every line of the file parses, but for what the app wrote below Python (to fd 1 itself).
    bare = [line for line in log.read_text().splitlines() if not line.startswith("{")]
    assert bare == ["fd write /j"]


def test_capture_output_points_fds_at_the_log_file_and_follows_rotation(serve, tmp_path):
    log = tmp_path / "app.log"
    server = serve("--log-file", str(log), "--capture-output", app="applogger:app")
    wait_ready(log)
    request(server, "/before")
    wait_until(lambda: "fd write /before" in log.read_text(), 10, "the fd write in the log file")
    log.rename(tmp_path / "app.log.1")
    server.signal(signal.SIGUSR1)
    wait_until(log.exists, 10, "the log file reopened")

    def rotated() -> bool:
        request(server, "/after")
        return "fd write /after" in log.read_text() and re.search(
            r"\[INFO\] printed /after$", log.read_text(), re.M
        )

    wait_until(rotated, 10, "the fd write and the print in the new file", lambda: log.read_text())
    assert "fd write" not in server.log()


def test_app_records_follow_log_level(serve, tmp_path):
    log = tmp_path / "app.log"
    server = serve("--log-file", str(log), "--log-level", "warning", app="applogger:app")
    wait_until(lambda: answers(server, "/w"), 15, "the app to answer")
    wait_until(lambda: "root warning /w" in log.read_text(), 10, "the warning", lambda: log.read_text())
    text = log.read_text()
    assert "named warning /w" in text
    assert "info /w" not in text and "named info at import" not in text


def test_an_app_that_configures_logging_keeps_its_own_format(serve, tmp_path):
    log = tmp_path / "app.log"
    server = serve("--log-file", str(log), app="applogger:app", env={"APPLOGGER_BASICCONFIG": "1"})
    wait_ready(log)
    request(server, "/b")
    # basicConfig writes to stderr, the server's output here; forkserve adds no second copy.
    wait_until(
        lambda: "APPFORMAT WARNING root root warning /b" in server.log(), 10, "app's format", server.tail
    )
    assert "APPFORMAT INFO applogger named info /b" in server.log()
    assert "/b" not in log.read_text()


@pytest.mark.parametrize("kind", ["json", "yaml", "ini"])
def test_log_config_configures_logging_in_every_process(serve, tmp_path, kind):
    mine = tmp_path / "mine.log"
    if kind == "ini":
        config = tmp_path / "logging.ini"
        config.write_text(
            "[loggers]\nkeys=root\n[handlers]\nkeys=file\n[formatters]\nkeys=plain\n"
            "[logger_root]\nlevel=INFO\nhandlers=file\n"
            f"[handler_file]\nclass=FileHandler\nformatter=plain\nargs=({str(mine)!r},)\n"
            "[formatter_plain]\nformat=MINE %(process)d %(name)s %(message)s\n"
        )
    else:
        data = {
            "version": 1,
            "formatters": {"plain": {"format": "MINE %(process)d %(name)s %(message)s"}},
            "handlers": {
                "file": {"class": "logging.FileHandler", "filename": str(mine), "formatter": "plain"}
            },
            "root": {"level": "INFO", "handlers": ["file"]},
        }
        config = tmp_path / f"logging.{kind}"
        config.write_text(json.dumps(data))  # JSON is YAML too
    log = tmp_path / "server.log"
    server = serve("--log-file", str(log), "--log-config", str(config), app="applogger:app")
    wait_ready(log)
    request(server, "/c")
    wait_until(lambda: mine.exists() and "root warning /c" in mine.read_text(), 10, "the app's file")
    text = mine.read_text()
    assert re.search(r"^MINE \d+ applogger named info /c$", text, re.M)
    # forkserve's own loggers keep writing to --log-file; the app's records are not copied there.
    assert "Application startup complete." in log.read_text()
    assert "/c" not in log.read_text()


def test_a_broken_log_config_is_one_line_and_exit_2(serve, tmp_path):
    config = tmp_path / "logging.json"
    config.write_text('{"version": 1, "handlers": {"x": {"class": "no.such.Handler"}}}')
    server = serve("--log-config", str(config))
    assert server.wait_exit() == 2
    assert re.search(
        r"^forkserve: error: --log-config .*logging\.json: ValueError: .*no\.such",
        server.log(),
        re.M,
    )
    assert "Traceback" not in server.log()


def test_access_and_error_logs_apart_each_reopened_on_usr1(serve, tmp_path):
    access, error = tmp_path / "access.log", tmp_path / "error.log"
    server = serve("--access-logfile", str(access), "--error-logfile", str(error), "-w", "2")
    wait_ready(error, 2)
    request(server, "/first")
    wait_until(lambda: access.exists() and "/first" in access.read_text(), 10, "the access line")
    assert "/first" not in error.read_text()
    assert "Application startup complete." in error.read_text()
    assert "Application startup complete." not in access.read_text()
    access.rename(tmp_path / "access.log.1")
    error.rename(tmp_path / "error.log.1")
    server.signal(signal.SIGUSR1)
    wait_until(lambda: access.exists() and error.exists(), 10, "both files reopened")

    def both_workers_reopened() -> bool:
        request(server, "/second")
        return access.exists() and access.read_text().count("/second") >= 1

    wait_until(both_workers_reopened, 10, "an access line in the new file")
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert "Shutting down" in error.read_text()
    assert "/second" not in (tmp_path / "access.log.1").read_text()


def test_access_logfile_dash_is_stdout_and_turns_the_access_log_on(serve, tmp_path):
    log = tmp_path / "error.log"
    server = serve("--access-logfile", "-", "--log-file", str(log))
    wait_ready(log)
    request(server, "/stdout")
    wait_until(lambda: '"GET /stdout HTTP/1.1" 200' in server.log(), 10, "the access line on stdout")
    assert "/stdout" not in log.read_text()


def test_gunicorn_access_logformat(serve, tmp_path):
    access = tmp_path / "access.log"
    fmt = (
        '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" '
        "%({x-request-id}i)s %({content-length}o)s %(M)s"
    )
    server = serve("--access-logfile", str(access), "--access-logformat", fmt, wait=1)
    response = request(
        server, "/p?q=1", headers={"User-Agent": 'evil" agent', "Referer": "http://r/", "X-Request-Id": "abc"}
    )
    wait_until(lambda: access.exists() and "/p?q=1" in access.read_text(), 10, "the access line")
    [line] = access.read_text().splitlines()
    # Its own file in text: the line alone, as gunicorn writes it; the client's quote escaped.
    match = re.fullmatch(
        r'127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "GET /p\?q=1 HTTP/1\.1" 200 (\d+) '
        r'"http://r/" "evil\\" agent" abc (\d+) \d+',
        line,
    )
    assert match, line
    # %(b)s and %({content-length}o)s: the body's bytes, as sent.
    assert match[1] == match[2] == str(len(response.content))


def test_gunicorn_access_logformat_in_json_keeps_the_fields(serve, tmp_path):
    log = tmp_path / "all.log"
    server = serve(
        "--log-format", "json", "--log-file", str(log), "--access-log", "--access-logformat", "%(r)s %(s)s",
    )  # fmt: skip
    wait_ready(log)
    request(server, "/jf")
    wait_until(lambda: "/jf" in log.read_text(), 10, "the access line")
    [line] = [line for line in json_lines(log.read_text()) if line.get("path") == "/jf"]
    assert line["message"] == "GET /jf HTTP/1.1 200"
    assert (line["logger"], line["worker"], line["status"], line["complete"]) == (
        "forkserve.access",
        1,
        200,
        True,
    )


def test_use_colors_colours_level_names(serve, tmp_path):
    log = tmp_path / "colour.log"
    serve("--log-file", str(log), "--use-colors")
    wait_until(lambda: log.exists() and "Application startup complete." in log.read_text(), 15, "startup")
    assert "[\x1b[32mINFO\x1b[0m] Application startup complete." in Path(log).read_text()
    plain = tmp_path / "plain.log"
    serve("--log-file", str(plain))
    wait_ready(plain)
    assert "\x1b[" not in plain.read_text()
