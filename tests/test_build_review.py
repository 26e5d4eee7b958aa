"""`pigbench build review`: the curator's keep/drop page and its decision log."""

import json

import pytest

from build_fixtures import workspace_with_sets, wsgi_call
from pigbench.build.review import make_review_app
from pigbench.build.sets import decisions, kept_sets
from pigbench.cli import main as cli


def decide(app, set_id, decision, reason=""):
    body = json.dumps({"set_id": set_id, "decision": decision, "reason": reason}).encode()
    status, _, out = wsgi_call(app, "POST", "/api/decisions", body)
    return status, json.loads(out)


def test_page_lists_every_rendered_set_with_local_assets_only(tmp_path):
    ws = workspace_with_sets(tmp_path / "ws", 3, keep=0)
    (ws.root / "review.jsonl").unlink()
    app = make_review_app(ws)
    status, headers, page = wsgi_call(app, "GET", "/")
    html = page.decode()
    assert status == 200 and html.count('class="set ') == 3 and "Undecided" in html
    assert "http://" not in html and "https://" not in html  # no CDN
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    set_id = json.loads(wsgi_call(app, "GET", "/api/sets")[2])[0]["set_id"]
    status, headers, png = wsgi_call(app, "GET", f"/images/{set_id}/2.png")
    assert status == 200 and headers["Content-Type"] == "image/png" and png.startswith(b"\x89PNG")
    assert wsgi_call(app, "GET", "/images/no-such-set/0.png")[0] == 404
    assert wsgi_call(app, "GET", "/static/review.js")[0] == 200
    assert wsgi_call(app, "GET", "/static/../workspace.py")[0] == 404


def test_decisions_are_saved_at_once_and_the_last_one_counts(tmp_path):
    ws = workspace_with_sets(tmp_path / "ws", 3, keep=0)
    (ws.root / "review.jsonl").unlink()
    app = make_review_app(ws)
    ids = [s["set_id"] for s in json.loads(wsgi_call(app, "GET", "/api/sets")[2])]
    status, out = decide(app, ids[0], "drop")
    assert status == 400 and out["error"] == "say why the set is dropped"
    assert decide(app, ids[0], "maybe", "x")[0] == 400
    assert decide(app, "unknown-set", "keep")[0] == 404
    status, out = decide(app, ids[0], "drop", "low image quality")
    assert status == 200 and (out["decision"], out["reason"]) == ("drop", "low image quality")
    assert decisions(ws)[ids[0]]["decision"] == "drop"  # on disk before the answer
    assert decide(app, ids[1], "keep")[0] == 200
    assert decide(app, ids[0], "keep", "second look: fine")[0] == 200
    latest = decisions(ws)
    assert latest[ids[0]]["decision"] == "keep" and latest[ids[0]]["reason"] == "second look: fine"
    assert [s.set_id for s in kept_sets(ws)] == ids[:2]
    assert len((ws.root / "review.jsonl").read_text().splitlines()) == 3


def test_cli_records_a_decision_and_prints_the_summary(tmp_path, capsys):
    ws = workspace_with_sets(tmp_path / "ws", 2, keep=1)
    target = kept_sets(ws)[0].set_id
    work = ["build", "--workdir", str(ws.root), "review"]
    assert cli(work + ["--set", target, "--decision", "drop"]) == 2
    assert "say why" in capsys.readouterr().err
    assert cli(work + ["--set", target, "--decision", "drop", "--reason", "blurry"]) == 0
    assert cli(work + ["--summary"]) == 0
    assert "2 rendered sets: drop 2" in capsys.readouterr().out


def test_an_unexpected_error_answers_500_without_details(tmp_path, capsys):
    """An exception in a handler went to wsgiref's plain-text 500 page, without the security headers and,
    for the API, without the JSON the page's script reads; the details go to the server's log only."""
    from pigbench.build.webapp import Router

    app = Router()

    @app.route("GET", "/api/boom")
    def boom(request):
        raise RuntimeError("secret path /home/curator/ws")

    status, headers, body = wsgi_call(app, "GET", "/api/boom")
    assert status == 500 and json.loads(body) == {"error": "internal error: the request was not completed"}
    assert "default-src 'self'" in headers["Content-Security-Policy"] and b"secret" not in body
    assert "secret path /home/curator/ws" in capsys.readouterr().err


def test_the_review_page_answers_only_to_a_loopback_host(tmp_path):
    """The review page has no sign-in, and a web page the curator visits whose domain is rebound to
    127.0.0.1 (DNS rebinding) could read every set and record decisions; it now answers only to
    localhost / 127.x / [::1] (other hosts only when served on another --host on purpose)."""
    ws = workspace_with_sets(tmp_path / "ws", 2, keep=0)
    app = make_review_app(ws)

    def at(host, local_app=app):
        return lambda environ, start_response: local_app({**environ, "HTTP_HOST": host}, start_response)

    set_id = json.loads(wsgi_call(at("localhost:8765"), "GET", "/api/sets")[2])[0]["set_id"]
    assert wsgi_call(at("127.0.0.1:8765"), "GET", "/")[0] == 200
    assert wsgi_call(at("[::1]:8765"), "GET", "/")[0] == 200
    before = decisions(ws)
    body = json.dumps({"set_id": set_id, "decision": "keep", "reason": ""}).encode()
    status, _, out = wsgi_call(at("rebound.example:8765"), "POST", "/api/decisions", body)
    assert status == 403 and "only at localhost" in json.loads(out)["error"]
    assert wsgi_call(at("rebound.example:8765"), "GET", "/api/sets")[0] == 403
    for rebound in ("localhost.rebound.example", "127.0.0.1.rebound.example:8765", "localhost:8765.example"):
        assert wsgi_call(at(rebound), "GET", "/api/sets")[0] == 403, rebound  # a loopback name only at the start
    assert wsgi_call(at("LocalHost:8765"), "GET", "/api/sets")[0] == 200  # host names are case-insensitive
    assert decisions(ws) == before and before[set_id]["decision"] == "drop"
    assert wsgi_call(at("lab-box:8765", make_review_app(ws, local_only=False)), "GET", "/api/sets")[0] == 200


@pytest.mark.parametrize("name, line, field", [("prompts.jsonl", 2, "set_id"), ("variants.jsonl", 1, "variants"),
                                               ("renders.jsonl", 3, "path"), ("review.jsonl", 2, "decision")])
def test_a_workspace_record_without_a_field_stages_read_is_a_one_line_error(tmp_path, capsys, name, line, field):
    """A record missing a field the stages read (a hand-edited or damaged line) ended every later stage in a
    KeyError traceback; it is now one line naming the file, the line and the field."""
    ws = workspace_with_sets(tmp_path / "ws", 3)
    path = ws.root / name
    records = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    del records[line - 1][field]
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    assert cli(["build", "--workdir", str(ws.root), "review", "--summary"]) == 2
    assert capsys.readouterr().err == f"error: {path}:{line}: no '{field}' field; repair or remove the line\n"


def test_a_workspace_file_that_is_not_utf8_names_its_line(tmp_path, capsys):
    """A byte that is not UTF-8 gave "error: 'utf-8' codec can't decode byte 0xff ..." naming no file."""
    ws = workspace_with_sets(tmp_path / "ws", 2)
    with ws.review.open("ab") as f:
        f.write(b'{"set_id": "\xff"}\n')
    assert cli(["build", "--workdir", str(ws.root), "review", "--summary"]) == 2
    assert capsys.readouterr().err == f"error: {ws.review}:3: not UTF-8 text (byte 0xff); repair or remove the line\n"
