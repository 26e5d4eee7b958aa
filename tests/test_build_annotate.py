"""`pigbench build annotate`: rankings, balanced assignment, durable storage and access rules over real HTTP."""

import csv
import json
import threading
from collections import Counter

import pytest

from build_fixtures import Browserless, workspace_with_sets
from pigbench.build.annotate.app import make_annotate_app
from pigbench.build.annotate.store import AccessDenied, AlreadySubmitted, AnnotationStore, SetChanges, SetRetired
from pigbench.build.ranking import InvalidRanking, mid_ranks, to_variant_order, validate_ranks
from pigbench.build.sets import ImageSet, record_decision
from pigbench.build.webapp import MAX_BODY, make_local_server
from pigbench.build.workspace import Workspace
from pigbench.cli import main as cli


@pytest.mark.parametrize("ranks", [[1, 2, 3, 4], [4, 3, 2, 1], [1, 1, 3, 4], [1, 2, 2, 4], [2, 1, 2, 4], [1, 1, 1, 1]])
def test_valid_rankings_with_ties(ranks):
    assert validate_ranks(ranks) == tuple(ranks)


@pytest.mark.parametrize("ranks, message", [
    ([1, 1, 2, 3], "must be \\[1, 1, 3, 4\\]"), ([1, 2, 4, 4], "must be \\[1, 2, 3, 3\\]"), ([1, 2, 3], "all 4 images"),
    ([1, 2, 3, 5], "between 1 and 4"), ([0, 1, 2, 3], "between 1 and 4"), ([1, 2, 3, "4"], "whole number"),
    ([1, 2, 3, True], "whole number"), ("1234", "list"), (None, "list"), ([1.0, 2, 3, 4], "whole number"),
])
def test_invalid_rankings_are_refused_with_a_reason(ranks, message):
    with pytest.raises(InvalidRanking, match=message):
        validate_ranks(ranks)


def test_screen_order_maps_back_to_variant_order():
    # slot 0 shows variant 2, slot 1 variant 0, ...: the variant shown first got rank 1
    assert to_variant_order([1, 2, 2, 4], [2, 0, 3, 1]) == (2, 4, 1, 2)
    assert mid_ranks([1, 1, 3, 4]) == (1.5, 1.5, 3, 4)


def fake_sets(n):
    return [ImageSet(f"set-{i:03d}", f"prompt {i}", "Animals", "Simple Detail", ("a", "b", "c", "d"),
                     tuple(f"images/set-{i:03d}/{j}.png" for j in range(4)), ()) for i in range(n)]


def test_assignment_is_random_but_balanced_over_75_annotators(tmp_path):
    store = AnnotationStore(tmp_path / "a.sqlite")
    store.initialize(5, 15, seed=0, open_signup=False)
    store.sync_sets(fake_sets(100))
    for _, code in store.create_invites(75):
        assert store.sign_in(code) is not None
    assigned = {a["annotator_id"]: a["assigned"] for a in store.progress()["annotators"]}
    assert all(5 <= k <= 15 for k in assigned.values()) and len(set(assigned.values())) > 5
    per_set = [s["assigned"] for s in store.progress()["sets"]]
    assert max(per_set) - min(per_set) <= 1 and min(per_set) >= 5
    orders = [a.display_order for a in store.assignments("annotator001")]
    assert all(sorted(o) == [0, 1, 2, 3] for o in orders) and len(set(orders)) > 1
    first = [a.set_id for a in store.assignments("annotator001")]
    assert store.sign_in(dict(store.create_invites(1))["annotator076"]) and first == [
        a.set_id for a in store.assignments("annotator001")]  # signing in again never reassigns


def test_invites_skip_ids_an_open_sign_up_took(tmp_path):
    store = AnnotationStore(tmp_path / "a.sqlite")
    store.initialize(1, 1, seed=0, open_signup=True)
    store.sync_sets(fake_sets(3))
    assert store.sign_in("annotator002") is not None  # someone signed up with the id the next invite would get
    invites = store.create_invites(2)  # was sqlite3.IntegrityError
    assert [i for i, _ in invites] == ["annotator003", "annotator004"]
    assert all(store.session(store.sign_in(code), "annotator") == i for i, code in invites)
    assert [a["annotator_id"] for a in store.progress()["annotators"]] == ["annotator002", "annotator003",
                                                                          "annotator004"]


def test_submissions_are_validated_final_and_durable(tmp_path):
    store = AnnotationStore(tmp_path / "a.sqlite")
    store.initialize(3, 3, seed=1, open_signup=True)
    store.sync_sets(fake_sets(8))
    assert store.sign_in("alice") and store.sign_in("bob") and store.sign_in("no spaces allowed") is None
    mine, theirs = store.assignments("alice"), store.assignments("bob")
    assert not {a.set_id for a in mine} & {a.set_id for a in theirs}
    with pytest.raises(InvalidRanking):
        store.submit("alice", mine[0].set_id, [1, 1, 2, 3])
    with pytest.raises(AccessDenied):
        store.submit("alice", theirs[0].set_id, [1, 2, 3, 4])
    ranks = store.submit("alice", mine[0].set_id, [1, 2, 2, 4], elapsed_ms=1200)
    assert ranks == to_variant_order([1, 2, 2, 4], mine[0].display_order)
    with pytest.raises(AlreadySubmitted):
        store.submit("alice", mine[0].set_id, [4, 3, 2, 1])
    reopened = AnnotationStore(tmp_path / "a.sqlite")  # a fresh connection, as after a crash
    row, = reopened.own_rankings("alice")
    assert row["screen_ranks"] == [1, 2, 2, 4] and row["ranks"] == list(ranks) and row["elapsed_ms"] == 1200
    assert reopened.own_rankings("bob") == []


@pytest.fixture
def served(tmp_path):
    ws = workspace_with_sets(tmp_path / "ws", 8)
    store = AnnotationStore(ws.annotate_db)
    token = store.initialize(3, 3, seed=2, open_signup=False)
    from pigbench.build.sets import kept_sets

    store.sync_sets(kept_sets(ws))
    invites = dict(store.create_invites(2))
    server = make_local_server(make_annotate_app(store, ws.root))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", store, invites, token
    server.shutdown()
    server.server_close()


def test_http_access_rules(served):
    base, store, invites, admin_token = served
    alice, bob = Browserless(base), Browserless(base)
    assert alice.request("GET", "/task")[2] == base + "/"  # not signed in: back to sign-in
    assert alice.request("POST", "/signin", form={"credential": "wrong"})[0] == 401
    assert alice.request("POST", "/signin", form={"credential": invites["annotator001"]})[2] == base + "/task"
    assert bob.request("POST", "/signin", form={"credential": invites["annotator002"]})[0] == 200
    a_sets = json.loads(alice.request("GET", "/api/me")[1])["sets"]
    b_sets = json.loads(bob.request("GET", "/api/me")[1])["sets"]
    assert len(a_sets) == len(b_sets) == 3 and not set(a_sets) & set(b_sets)

    status, body, _ = alice.request("POST", "/api/rankings", data={"set_id": a_sets[0], "ranks": [1, 3, 3, 4]})
    assert status == 400 and "ranking refused" in json.loads(body)["error"]
    status, body, _ = alice.request("POST", "/api/rankings", data={"set_id": a_sets[0], "ranks": [2, 1, 3, 3]})
    assert status == 200 and json.loads(body)["done"] == 1
    assert alice.request("POST", "/api/rankings", data={"set_id": a_sets[0], "ranks": [1, 2, 3, 4]})[0] == 409

    assert bob.request("GET", "/api/annotators/annotator001/rankings")[0] == 403
    assert bob.request("GET", f"/img/{a_sets[0]}/0")[0] == 403
    assert bob.request("POST", "/api/rankings", data={"set_id": a_sets[1], "ranks": [1, 2, 3, 4]})[0] == 403
    assert bob.request("GET", "/admin/export/rankings.jsonl")[0] == 403
    assert bob.request("GET", "/api/annotators/annotator002/rankings")[1] == b"[]"
    assert Browserless(base).request("GET", "/api/me")[0] == 401
    status, png, _ = alice.request("GET", f"/img/{a_sets[0]}/3")
    assert status == 200 and png.startswith(b"\x89PNG")

    mine = json.loads(alice.request("GET", "/api/annotators/annotator001/rankings")[1])
    assert [(r["set_id"], r["screen_ranks"]) for r in mine] == [(a_sets[0], [2, 1, 3, 3])]
    assert store.assignment("annotator001", a_sets[0]).ranks is not None

    admin = Browserless(base)
    assert admin.request("POST", "/admin/signin", form={"token": "guess"})[0] == 401
    assert admin.request("POST", "/admin/signin", form={"token": admin_token})[0] == 200
    assert b"annotator001" in admin.request("GET", "/admin")[1]
    exported = [json.loads(line) for line in admin.request("GET", "/admin/export/rankings.jsonl")[1].splitlines()]
    assert [(r["annotator_id"], r["set_id"]) for r in exported] == [("annotator001", a_sets[0])]
    assert admin.request("GET", "/api/me")[0] == 401  # the admin session is not an annotator session


def test_cli_init_invite_and_status(tmp_path, capsys):
    ws = workspace_with_sets(tmp_path / "ws", 4, keep=3)
    work = ["build", "--workdir", str(ws.root), "annotate"]
    assert cli(work + ["invite", "--count", "2"]) == 2  # before init
    assert "annotate init" in capsys.readouterr().err
    assert cli(work + ["init", "--min-sets", "2", "--max-sets", "2"]) == 0
    out = capsys.readouterr().out
    assert "3 new set(s)" in out and "admin token" in out
    assert cli(work + ["init", "--min-sets", "2", "--max-sets", "2"]) == 0
    again = capsys.readouterr().out
    assert "0 new set(s)" in again and "admin token" not in again  # the token is shown once
    assert cli(work + ["invite", "--count", "3", "--prefix", "u"]) == 0
    rows = capsys.readouterr().out.split()
    assert rows[0] == "annotator_id,invite_code" and [r.split(",")[0] for r in rows[1:]] == ["u001", "u002", "u003"]
    store = AnnotationStore(ws.annotate_db)
    store.sign_in(rows[1].split(",")[1])
    assert cli(work + ["status"]) == 0
    assert "3 annotators, 3 sets, 0 rankings" in capsys.readouterr().out
    assert Counter(s["assigned"] for s in store.progress()["sets"]) == Counter({1: 2, 0: 1})


def test_the_command_that_a_missing_database_names_runs_as_written(tmp_path, capsys):
    """The message said to run `pigbench build annotate init --workdir W`, which argparse refused
    (--workdir was accepted only before STAGE and after `annotate`)."""
    ws = workspace_with_sets(tmp_path / "ws", 2, keep=2)
    assert cli(["build", "annotate", "status", "--workdir", str(ws.root)]) == 2
    command = capsys.readouterr().err.split("`")[1].split()
    assert command[:4] == ["pigbench", "build", "annotate", "init"] and "--workdir" in command
    assert cli(command[1:]) == 0
    assert "2 new set(s)" in capsys.readouterr().out and ws.annotate_db.exists()
    assert cli(["build", "annotate", "status", "--workdir", str(ws.root)]) == 0


def test_cli_invite_out_file_has_the_header_once(tmp_path, capsys):
    """--out wrote the invites without the printed CSV's header line, so a CSV reader (a mail merge)
    took the first annotator's invite for the header and dropped it."""
    ws = workspace_with_sets(tmp_path / "ws", 2, keep=2)
    work = ["build", "--workdir", str(ws.root), "annotate"]
    assert cli(work + ["init", "--min-sets", "1", "--max-sets", "2"]) == 0
    out = tmp_path / "invites.csv"
    assert cli(work + ["invite", "--count", "2", "--out", str(out)]) == 0
    assert cli(work + ["invite", "--count", "1", "--out", str(out)]) == 0  # appends, no second header
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("annotator0")]
    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [f"{r['annotator_id']},{r['invite_code']}" for r in rows] == printed
    assert [r["annotator_id"] for r in rows] == ["annotator001", "annotator002", "annotator003"]


def test_cli_invite_refuses_a_bad_count_or_a_folder_as_out_before_creating_invites(tmp_path, capsys):
    """--count 0 printed an empty CSV (exit 0); --out DIR ended in an IsADirectoryError traceback
    after the invites were created."""
    ws = workspace_with_sets(tmp_path / "ws", 2, keep=2)
    work = ["build", "--workdir", str(ws.root), "annotate"]
    assert cli(work + ["init", "--min-sets", "1", "--max-sets", "2"]) == 0
    capsys.readouterr()
    for extra, message in ((["--count", "0"], "--count must be at least 1, got 0"),
                           (["--count", "2", "--out", str(tmp_path)],
                            f"--out {tmp_path} is a directory; name the CSV file to append the invites to")):
        assert cli(work + ["invite", *extra]) == 2
        assert capsys.readouterr().err == f"error: {message}\n"
    assert AnnotationStore(ws.annotate_db).progress()["annotators"] == []


@pytest.mark.parametrize("days", ["0", "-1", "nan"])
def test_serve_refuses_a_session_lifetime_that_is_not_positive(tmp_path, capsys, days):
    """One check, the store's: serve passes --session-days to it and prints its error (exit 2)."""
    ws = workspace_with_sets(tmp_path / "ws", 2, keep=2)
    work = ["build", "--workdir", str(ws.root), "annotate"]
    assert cli(work + ["init", "--min-sets", "1", "--max-sets", "2"]) == 0
    capsys.readouterr()
    assert cli(work + ["serve", "--port", "0", "--session-days", days]) == 2
    assert capsys.readouterr().err == f"error: --session-days (the sign-in lifetime) must be positive, got {days}\n"


def test_open_sign_up_never_signs_in_as_an_invited_annotator(tmp_path):
    """With open sign-up on, typing an invited annotator's id (annotator001: predictable) signed in as
    them, reading and submitting their work without their invite code."""
    store = AnnotationStore(tmp_path / "a.sqlite")
    store.initialize(1, 1, seed=0, open_signup=True)
    store.sync_sets(fake_sets(3))
    (invited, code), = store.create_invites(1)
    assert store.sign_in(invited) is None
    assert store.session(store.sign_in(code), "annotator") == invited
    assert store.session(store.sign_in("carol"), "annotator") == "carol"
    assert store.session(store.sign_in("carol"), "annotator") == "carol"  # an open id still signs in again


def raw_http(base, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """Send one hand-written HTTP request (headers a browser or urllib would not send): (status, body)."""
    import socket

    host, port = base.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.replace(b"\n", b"\r\n") + b"\r\n" + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def test_malformed_and_cross_site_requests_are_refused_cleanly(served):
    """A negative Content-Length read the body to the end of the stream (past the 64 KiB limit; the
    thread waited for the client to close), a non-numeric one, JSON nested too deep and an
    elapsed_ms beyond SQLite's integers answered 500 (the last one losing the ranking), and a form
    of another site could sign the annotator out or in (CSRF)."""
    base, store, invites, _ = served
    alice = Browserless(base)
    alice.request("POST", "/signin", form={"credential": invites["annotator001"]})
    jar = next(h.cookiejar for h in alice.opener.handlers if hasattr(h, "cookiejar"))
    cookie = "; ".join(f"{c.name}={c.value}" for c in jar)
    sets = json.loads(alice.request("GET", "/api/me")[1])["sets"]
    post = f"POST /api/rankings HTTP/1.1\nHost: x\nCookie: {cookie}\nContent-Type: application/json\n".encode()
    status, body = raw_http(base, post + b"Content-Length: -1\n", b"x" * 70_000)
    assert status == 400 and "invalid Content-Length '-1'" in json.loads(body)["error"]
    assert raw_http(base, post + b"Content-Length: ten\n")[0] == 400
    status, body = raw_http(base, post + b"Content-Length: 30000\n", b"[" * 30_000)
    assert status == 400 and "not valid JSON" in json.loads(body)["error"]
    assert raw_http(base, post + b"Content-Length: 70000\n", b"x" * 70_000)[0] == 413
    over = MAX_BODY + 1  # the limit itself is the largest body taken
    assert raw_http(base, post + f"Content-Length: {over}\n".encode(), b"x" * over)[0] == 413
    status, body = raw_http(base, post + f"Content-Length: {MAX_BODY}\n".encode(), b"x" * MAX_BODY)
    assert status == 400 and "not valid JSON" in json.loads(body)["error"]
    status, _, _ = alice.request("POST", "/api/rankings",
                                 data={"set_id": sets[0], "ranks": [1, 2, 3, 4], "elapsed_ms": 10**30})
    assert status == 200 and store.own_rankings("annotator001")[0]["elapsed_ms"] is None

    for path, form in (("/signout", b""), ("/signin", f"credential={invites['annotator002']}".encode())):
        head = (f"POST {path} HTTP/1.1\nHost: x\nCookie: {cookie}\nSec-Fetch-Site: cross-site\n"
                f"Content-Type: application/x-www-form-urlencoded\nContent-Length: {len(form)}\n").encode()
        status, body = raw_http(base, head, form)
        assert status == 403 and b"another site" in body
        status, body = raw_http(base, head.replace(b"cross-site", b"same-site"), form)  # a sibling subdomain's page
        assert status == 403 and b"another site" in body
    assert json.loads(alice.request("GET", "/api/me")[1])["annotator_id"] == "annotator001"  # still signed in
    assert store.progress()["annotators"][1]["assigned"] == 0  # annotator002 was not signed in
    same_origin = (f"POST /signout HTTP/1.1\nHost: x\nCookie: {cookie}\nSec-Fetch-Site: same-origin\n"
                   "Content-Length: 0\n").encode()
    assert raw_http(base, same_origin)[0] == 303


def test_a_stalled_connection_is_closed_after_the_timeout_and_others_are_served(tmp_path, capsys):
    """A client that opened a socket and sent nothing, or half a request, held its handler thread
    forever (no read timeout): now the server closes it after its connection timeout, answers a body
    cut short with 408, and serves other clients meanwhile and afterwards."""
    import socket
    import time

    store = AnnotationStore(Workspace.at(tmp_path).annotate_db)
    store.initialize(1, 1, seed=0)
    server = make_local_server(make_annotate_app(store, tmp_path), connection_timeout_s=0.5)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        silent = socket.create_connection(("127.0.0.1", server.server_port), timeout=10)
        half = socket.create_connection(("127.0.0.1", server.server_port), timeout=10)
        half.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # no blank line: the headers never end
        start = time.monotonic()
        assert raw_http(base, b"GET / HTTP/1.1\nHost: x\n")[0] == 200  # served while both stall
        for sock in (silent, half):
            with sock:
                assert sock.recv(1024) == b""  # closed by the server (the client would wait 10 s)
        assert 0.4 <= time.monotonic() - start < 5
        status, body = raw_http(base, b"POST /signin HTTP/1.1\nHost: x\nContent-Length: 20\n", b"credential")
        assert status == 408 and b"did not arrive in time" in body
        assert raw_http(base, b"GET / HTTP/1.1\nHost: x\n")[0] == 200
    finally:
        server.shutdown()
        server.server_close()
    assert "the request did not arrive within 0.5 s" in capsys.readouterr().err
    with pytest.raises(ValueError, match="connection-timeout .* must be positive"):
        make_local_server(make_annotate_app(store, tmp_path), connection_timeout_s=0)
    assert cli(["build", "--workdir", str(tmp_path), "annotate", "serve", "--connection-timeout", "0"]) == 2
    assert "--connection-timeout (the per-connection read timeout) must be positive, got 0" in capsys.readouterr().err


def test_a_client_dripping_its_request_is_closed_at_the_request_deadline(capsys):
    """The connection timeout restarted with every byte: a client sending a header byte every 29 s held
    a handler thread for good. The request line, headers and body must now all arrive within twice the
    connection timeout; a request dripped faster than that is still served."""
    import socket
    import time

    from pigbench.build.webapp import REQUEST_DEADLINE_FACTOR, Response, Router

    app = Router()
    app.route("POST", "/echo")(lambda request: Response(request.body))

    def drip(head: bytes, data: bytes, every_s: float) -> tuple[bytes, float]:
        """Send ``head``, then ``data`` a byte every ``every_s`` s until the server answers or closes:
        (answer, seconds)."""
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as sock:
            sock.sendall(head)
            sock.settimeout(every_s)
            answer = b""
            for byte in data:
                try:
                    sock.sendall(bytes([byte]))
                    if chunk := sock.recv(4096):
                        answer += chunk
                    else:
                        break  # closed by the server
                except TimeoutError:
                    continue  # nothing yet: the next byte
                except OSError:  # reset: the server closed while a byte was on its way
                    break
            sock.settimeout(5)
            try:
                while chunk := sock.recv(4096):
                    answer += chunk
            except OSError:
                pass
        return answer, time.monotonic() - start

    assert REQUEST_DEADLINE_FACTOR == 2
    server = make_local_server(app, connection_timeout_s=0.4)  # each gap below is well within it
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        request = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody"
        answer, took = drip(b"", request, 0.002)  # all of it in ~0.15 s
        assert answer.startswith(b"HTTP/1.0 200") and answer.endswith(b"\r\n\r\nbody") and took < 0.8
        answer, took = drip(b"GET / HTTP/1.1\r\n", b"Host: x\r\nX-Slow: " + b"y" * 100, 0.1)  # headers never end
        assert answer == b"" and 0.7 <= took < 1.5
        answer, took = drip(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n", b"z" * 100, 0.1)
        assert answer.startswith(b"HTTP/1.0 408") and b"did not arrive in time" in answer and 0.7 <= took < 1.5
    finally:
        server.shutdown()
        server.server_close()
    assert "closed: the request was still arriving 0.8 s after the connection opened" in capsys.readouterr().err


@pytest.mark.parametrize("timeout", [float("nan"), -1.0])
def test_a_connection_timeout_that_is_not_positive_is_refused_before_serving(tmp_path, timeout):
    """NaN compares false with everything: a check written as ``timeout <= 0`` would let it through, and every
    connection would then fail setting its socket's timeout."""
    store = AnnotationStore(Workspace.at(tmp_path).annotate_db)
    store.initialize(1, 1, seed=0)
    with pytest.raises(ValueError, match=rf"--connection-timeout .* must be positive, got {timeout:g}$"):
        make_local_server(make_annotate_app(store, tmp_path), connection_timeout_s=timeout)


def test_an_expired_session_gets_the_sign_in_page_and_signing_in_again_keeps_the_rankings(served):
    base, store, invites, admin_token = served
    alice, admin = Browserless(base), Browserless(base)
    alice.request("POST", "/signin", form={"credential": invites["annotator001"]})
    admin.request("POST", "/admin/signin", form={"token": admin_token})
    first = json.loads(alice.request("GET", "/api/me")[1])["sets"][0]
    assert alice.request("POST", "/api/rankings", data={"set_id": first, "ranks": [1, 2, 3, 4]})[0] == 200
    with store.connect(write=True) as conn:  # 15 days pass (sessions of an older database: their recorded creation)
        conn.execute("UPDATE sessions SET created = created - 15 * 86400")
    status, page, url = alice.request("GET", "/task")
    assert (status, url) == (200, base + "/") and b'name="credential"' in page  # the sign-in page, not an error
    assert alice.request("GET", "/api/me")[0] == 401
    status, page, _ = admin.request("GET", "/admin")
    assert status == 200 and b'name="token"' in page and b"annotator001" not in page
    assert alice.request("POST", "/signin", form={"credential": invites["annotator001"]})[2] == base + "/task"
    assert json.loads(alice.request("GET", "/api/me")[1])["done"] == 1  # nothing lost
    with store.connect() as conn:  # the expired sessions were deleted at the sign-in
        assert conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 1
    short = AnnotationStore(store.path, session_days=0.5)  # `serve --session-days 0.5`: also for sessions made before
    token = store.sign_in(invites["annotator002"])
    assert short.session(token, "annotator") == "annotator002"
    with store.connect(write=True) as conn:
        conn.execute("UPDATE sessions SET created = created - 86400")
    assert store.session(token, "annotator") == "annotator002" and short.session(token, "annotator") is None
    assert store.session(store.sign_in(invites["annotator002"]), "admin") is None  # an annotator's session is no admin's
    with pytest.raises(ValueError, match="positive"):
        AnnotationStore(store.path, session_days=0)


def _set_cookies(app, headers: dict[str, str], scheme: str = "http") -> list[str]:
    """The Set-Cookie headers ``app`` answers to a sign-out POST with these request headers."""
    import io
    from wsgiref.util import setup_testing_defaults

    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/signout", "wsgi.input": io.BytesIO(b""),
               "wsgi.url_scheme": scheme, **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}}
    setup_testing_defaults(environ)
    answered = []
    app(environ, lambda status, response_headers: answered.extend(response_headers))
    return [v for k, v in answered if k == "Set-Cookie"]


@pytest.mark.parametrize("behind_proxy, scheme, forwarded, secure", [
    (False, "http", None, False),  # plain HTTP on localhost: Secure would break sign-in
    (False, "http", "https", False),  # any client can send the header: trusted only behind the proxy
    (False, "https", None, True),
    (True, "http", "https", True),  # the documented HTTPS reverse proxy
    (True, "http", "http", False),
    (True, "http", "https, http", False),  # the proxy's own value comes last
    (True, "http", None, False)])
def test_cookies_are_secure_only_for_requests_over_https(tmp_path, behind_proxy, scheme, forwarded, secure):
    store = AnnotationStore(tmp_path / "annotate.sqlite")
    store.initialize(1, 1, seed=0, open_signup=False)
    app = make_annotate_app(store, tmp_path, behind_proxy=behind_proxy)
    headers = {"Cookie": "pb_session=x", "Host": "annotate.example"}
    if forwarded is not None:
        headers["X-Forwarded-Proto"] = forwarded
    cookies = _set_cookies(app, headers, scheme)
    assert len(cookies) == 2 and all(c.endswith("; Secure") == secure for c in cookies), cookies


def test_init_again_to_add_sets_keeps_the_settings_it_is_not_given(tmp_path, capsys):
    """`annotate init` is run again to add newly kept sets; it wrote its defaults over the stored settings, so
    open signup was switched off (annotators signing in by id were turned away) and --min-sets/--max-sets/--seed
    went back to 5/15/0 for every later annotator. Only the settings given change now."""
    ws = workspace_with_sets(tmp_path / "ws", 4)
    init = ["build", "--workdir", str(ws.root), "annotate", "init"]
    assert cli(init + ["--min-sets", "2", "--max-sets", "3", "--seed", "7", "--open-signup"]) == 0
    store = AnnotationStore(ws.annotate_db)
    assert store.settings() == {"min_sets": 2, "max_sets": 3, "seed": 7, "open_signup": True}
    capsys.readouterr()
    assert cli(init) == 0
    assert store.settings() == {"min_sets": 2, "max_sets": 3, "seed": 7, "open_signup": True}
    assert "2-3 sets per annotator, seed 7, open signup on" in capsys.readouterr().out
    assert cli(init + ["--max-sets", "4", "--no-open-signup"]) == 0
    assert store.settings() == {"min_sets": 2, "max_sets": 4, "seed": 7, "open_signup": False}
    assert cli(init + ["--min-sets", "5"]) == 2
    assert "need 1 <= min sets <= max sets, got 5, 4" in capsys.readouterr().err
    assert store.settings() == {"min_sets": 2, "max_sets": 4, "seed": 7, "open_signup": False}
    fresh = AnnotationStore(tmp_path / "fresh.sqlite")
    assert fresh.initialize() is not None
    assert fresh.settings() == {"min_sets": 5, "max_sets": 15, "seed": 0, "open_signup": False}


def test_a_set_no_longer_kept_is_retired_never_assigned_and_kept_again_is_offered_again(tmp_path):
    """`annotate init` only added sets, so a set dropped in review after it was loaded kept being assigned and
    ranked (rankings the export then leaves out). sync_sets retires it: never assigned again, an annotator's
    unranked assignment of it leaves their list (ranked ones stay, as do the rankings), and it comes back when
    kept again."""
    store = AnnotationStore(tmp_path / "a.sqlite")
    store.initialize(3, 3, seed=4, open_signup=True)
    sets = fake_sets(6)
    assert store.sync_sets(sets) == SetChanges(added=6, retired=0, restored=0, offered=6)
    store.sign_in("alice")
    first, second, third = store.assignments("alice")
    store.submit("alice", first.set_id, [1, 2, 3, 4])
    dropped = {first.set_id, second.set_id}
    assert store.sync_sets([s for s in sets if s.set_id not in dropped]) == SetChanges(0, 2, 0, 4)
    assert store.sync_sets([s for s in sets if s.set_id not in dropped]) == SetChanges(0, 0, 0, 4)  # idempotent
    mine = store.assignments("alice")
    assert [(a.set_id, a.ranks is not None, a.retired) for a in mine] == [
        (first.set_id, True, True), (third.set_id, False, False)]  # her ranked work stays counted; Set 2 of 2 next
    assert [a.set_id for a in store.assignments("alice", withdrawn=True)] == [second.set_id]
    with pytest.raises(SetRetired, match="withdrawn"):
        store.submit("alice", second.set_id, [1, 2, 3, 4])
    assert [r["set_id"] for r in store.all_rankings()] == [first.set_id]  # nothing deleted, nothing added
    for user in ("bob", "cy", "dan"):
        store.sign_in(user)
        assert not {a.set_id for a in store.assignments(user)} & dropped
    progress = store.progress()
    assert {a["annotator_id"]: (a["done"], a["assigned"], a["withdrawn"]) for a in progress["annotators"]} == {
        "alice": (1, 2, 1), "bob": (0, 3, 0), "cy": (0, 3, 0), "dan": (0, 3, 0)}
    assert {s["set_id"] for s in progress["sets"] if s["retired"]} == dropped
    offered = [s["assigned"] for s in progress["sets"] if not s["retired"]]
    assert max(offered) - min(offered) <= 1 and sum(offered) == 10  # bob, cy, dan and alice's third set

    assert store.sync_sets(sets) == SetChanges(0, 0, 2, 6)  # the curator keeps them again
    assert [a.set_id for a in store.assignments("alice")] == [first.set_id, second.set_id, third.set_id]
    assert store.assignments("alice", withdrawn=True) == []
    assert store.submit("alice", second.set_id, [1, 2, 3, 4])
    store.sign_in("eve")  # the least covered sets now: the two offered again
    assert dropped <= {a.set_id for a in store.assignments("eve")}


def test_an_annotator_whose_unranked_sets_were_retired_gets_replacements_up_to_their_share(tmp_path):
    """Sets were assigned only at first sign-in, so an annotator whose unranked sets were all retired saw "All n sets
    ranked" for good. Their share (k in min..max) is topped up by the least-covered rule, among the offered sets
    they do not have; a ranked or withdrawn set is never given again, and a top-up never goes past k."""
    store = AnnotationStore(tmp_path / "a.sqlite")
    store.initialize(3, 3, seed=5, open_signup=True)
    sets = fake_sets(7)
    store.sync_sets(sets)
    store.sign_in("alice")
    store.sign_in("bob")
    first, second, third = (a.set_id for a in store.assignments("alice"))
    store.submit("alice", first, [1, 2, 3, 4])
    kept = [s for s in sets if s.set_id not in {second, third}]
    store.sync_sets(kept)
    assert [a.set_id for a in store.assignments("alice")] == [first]  # all her unranked sets withdrawn
    assert store.top_up("alice") == 2
    mine = store.assignments("alice")
    assert [a.position for a in mine] == [0, 3, 4] and mine[0].set_id == first
    new = {a.set_id for a in mine[1:]}
    assert not new & {first, second, third} and all(a.ranks is None and not a.retired for a in mine[1:])
    bobs = {a.set_id for a in store.assignments("bob")}
    nobodys = {s.set_id for s in sets} - {first, second, third} - bobs
    assert len(nobodys) == 1 and nobodys < new and len(new & bobs) == 1  # the least covered first
    assert store.top_up("alice") == 0 and store.sign_in("alice") and len(store.assignments("alice")) == 3
    for a in store.assignments("alice"):
        if a.ranks is None:
            store.submit("alice", a.set_id, [4, 3, 2, 1])
    assert store.top_up("alice") == 0  # her share is ranked: nothing more

    store.sync_sets([s for s in sets if s.set_id == first])  # ranked sets, retired, still count: no top-up
    assert store.top_up("alice") == 0 and len(store.assignments("alice")) == 3

    store.sync_sets([s for s in sets if s.set_id in {second, third} | bobs])
    store.sign_in("dan")
    dans = {a.set_id for a in store.assignments("dan")}
    assert len(dans) == 3
    spare = ({second, third} | bobs) - dans
    store.sync_sets([s for s in sets if s.set_id in spare])  # all of dan's retired, two sets he lacks offered
    assert store.top_up("dan") == 2 and len(store.assignments("dan")) == 2  # as many as are left to give
    store.sync_sets([s for s in sets if s.set_id in spare | {first}])
    assert store.sign_in("dan") and len(store.assignments("dan")) == 3  # a set offered later fills his share
    assert {a.set_id for a in store.assignments("dan")} == spare | {first}


def test_a_top_up_never_exceeds_the_maximum_and_follows_the_settings(tmp_path):
    """k is drawn again from (seed, id) under the current settings, so a share is never topped up past --max-sets."""
    store = AnnotationStore(tmp_path / "a.sqlite")
    store.initialize(4, 4, seed=0, open_signup=True)
    sets = fake_sets(12)
    store.sync_sets(sets)
    store.sign_in("alice")
    mine = [a.set_id for a in store.assignments("alice")]
    store.initialize(min_sets=1, max_sets=2)
    store.sync_sets([s for s in sets if s.set_id not in mine])
    assert store.top_up("alice") in (1, 2) and 1 <= len(store.assignments("alice")) <= 2
    store.initialize(min_sets=6, max_sets=6)
    assert store.top_up("alice") > 0 and len(store.assignments("alice")) == 6
    assert not {a.set_id for a in store.assignments("alice")} & set(mine)


def alice_with_three_of(n_sets: int, seed: int, path) -> tuple[AnnotationStore, list, tuple[str, str, str]]:
    """A store of ``n_sets`` offered sets, 3 to each annotator (open sign-up), where alice has signed in:
    (store, the sets, her three set ids in position order)."""
    store = AnnotationStore(path)
    store.initialize(3, 3, seed=seed, open_signup=True)
    sets = fake_sets(n_sets)
    store.sync_sets(sets)
    store.sign_in("alice")
    first, second, third = (a.set_id for a in store.assignments("alice"))
    return store, sets, (first, second, third)


def test_a_withdrawn_set_replaced_and_then_kept_again_never_takes_an_annotator_past_max_sets(tmp_path):
    """A set withdrawn (retired unranked), replaced by a top-up and then kept again came back to the annotator's list
    beside its replacement: max_sets + 1 sets. The replaced assignment now stays withdrawn from them (a ranking of it
    is refused), and no longer counts as an annotator of the set when others are assigned; one withdrawn but not
    yet replaced still comes back."""
    store, sets, (first, second, third) = alice_with_three_of(6, seed=4, path=tmp_path / "a.sqlite")
    store.submit("alice", first, [1, 2, 3, 4])
    store.sync_sets([s for s in sets if s.set_id != second])  # withdrawn from alice
    assert store.top_up("alice") == 1  # replaced (as the task page or a sign-in does)
    replacement = store.assignments("alice")[-1].set_id
    assert store.sync_sets(sets).restored == 1  # kept again
    mine = store.assignments("alice")
    assert [a.set_id for a in mine] == [first, third, replacement] and len(mine) == 3  # was 4, past max_sets
    assert [(a.set_id, a.replaced) for a in store.assignments("alice", withdrawn=True)] == [(second, True)]
    with pytest.raises(SetRetired, match="another given in its place"):
        store.submit("alice", second, [1, 2, 3, 4])
    assert store.top_up("alice") == 0 and store.sign_in("alice") and len(store.assignments("alice")) == 3
    (me,) = store.progress()["annotators"]
    assert (me["assigned"], me["done"], me["withdrawn"]) == (3, 1, 1)
    assert {s["set_id"]: s["assigned"] for s in store.progress()["sets"]}[second] == 0  # alice will not rank it

    store.sync_sets([s for s in sets if s.set_id != third])  # withdrawn, and kept again before any top-up
    assert [a.set_id for a in store.assignments("alice")] == [first, replacement]
    store.sync_sets(sets)
    assert [a.set_id for a in store.assignments("alice")] == [first, third, replacement]  # back: within her share


def test_a_top_up_with_fewer_sets_than_withdrawn_replaces_only_as_many_first_in_position_order(tmp_path):
    """Each set a top-up adds stands in for one withdrawn assignment, the first in position order: one
    withdrawn assignment left without a replacement comes back when its set is kept again, filling the share."""
    store, sets, (first, second, third) = alice_with_three_of(4, seed=1, path=tmp_path / "a.sqlite")
    (spare,) = {s.set_id for s in sets} - {first, second, third}
    store.sync_sets([s for s in sets if s.set_id not in (first, second)])  # both withdrawn from alice
    assert store.top_up("alice") == 1  # the one set she does not have
    assert [(a.set_id, a.replaced) for a in store.assignments("alice", withdrawn=True)] == [(first, True), (second, False)]
    store.sync_sets(sets)  # both kept again: the one not replaced comes back, within her share
    assert [a.set_id for a in store.assignments("alice")] == [second, third, spare]
    assert [a.set_id for a in store.assignments("alice", withdrawn=True)] == [first]


def test_a_second_top_up_replaces_the_newly_withdrawn_set_not_one_replaced_before(tmp_path):
    """A set withdrawn after an earlier top-up is the one the next top-up replaces (an assignment replaced
    before stays as it is), so keeping both sets again never takes the annotator past max_sets."""
    store, sets, (first, second, third) = alice_with_three_of(6, seed=2, path=tmp_path / "a.sqlite")
    store.sync_sets([s for s in sets if s.set_id != second])
    assert store.top_up("alice") == 1
    store.sync_sets([s for s in sets if s.set_id != third])  # second kept again (replaced: stays withdrawn), third withdrawn
    assert store.top_up("alice") == 1
    store.sync_sets(sets)
    mine = store.assignments("alice")
    assert len(mine) == 3 and {second, third}.isdisjoint(a.set_id for a in mine)
    assert [(a.set_id, a.replaced) for a in store.assignments("alice", withdrawn=True)] == [(second, True), (third, True)]


def test_annotators_a_set_was_replaced_for_do_not_count_as_its_annotators_when_others_are_assigned(tmp_path):
    """The least covered sets a new annotator gets are counted without the annotators a set was replaced for
    (they will not rank it): a set kept again after two annotators' top-ups replaced it is the least covered."""
    store = AnnotationStore(tmp_path / "a.sqlite")
    store.initialize(1, 1, seed=0, open_signup=True)
    only, *later = fake_sets(3)
    store.sync_sets([only])
    store.sign_in("alice")
    store.sign_in("bob")  # both get the only set
    store.sync_sets(later)  # withdrawn from both, who get one new set each
    assert store.top_up("alice") == 1 and store.top_up("bob") == 1
    assert {store.assignments(a)[0].set_id for a in ("alice", "bob")} == {s.set_id for s in later}
    store.sync_sets([only, *later])
    store.sign_in("carol")
    assert [a.set_id for a in store.assignments("carol")] == [only.set_id]  # no one may rank it; the others have one each


def test_an_older_database_gets_the_retired_column_and_keeps_its_rankings(tmp_path):
    """annotate.sqlite of an earlier version (sets without `retired`, rankings without `images_sha256`, assignments
    without `replaced`) opens, syncs and serves without losing a ranking."""
    import sqlite3

    path = tmp_path / "a.sqlite"
    store = AnnotationStore(path)
    store.initialize(2, 2, seed=0, open_signup=True)
    store.sync_sets(fake_sets(4))
    store.sign_in("old")
    done, todo = store.assignments("old")
    store.submit("old", done.set_id, [2, 1, 3, 4], elapsed_ms=5)
    with sqlite3.connect(path) as conn:  # the tables as the earlier version made them
        conn.execute("ALTER TABLE sets DROP COLUMN retired")
        conn.execute("ALTER TABLE rankings DROP COLUMN images_sha256")
        conn.execute("ALTER TABLE assignments DROP COLUMN replaced")
    before = AnnotationStore(path).all_rankings()
    assert [(r["set_id"], r["screen_ranks"], r["elapsed_ms"], r["images_sha256"]) for r in before] == [
        (done.set_id, [2, 1, 3, 4], 5, None)]
    reopened = AnnotationStore(path)  # `annotate serve` of the new version, before any `init`
    assert [(a.set_id, a.retired) for a in reopened.assignments("old")] == [(done.set_id, False), (todo.set_id, False)]
    spare = [s for s in fake_sets(4) if s.set_id not in {done.set_id, todo.set_id}]
    assert reopened.sync_sets(spare[:1]).retired == 3 and reopened.all_rankings() == before
    assert [(a.set_id, a.retired) for a in reopened.assignments("old")] == [(done.set_id, True)]
    assert reopened.sync_sets(fake_sets(4)).restored == 3
    reopened.submit("old", todo.set_id, [1, 2, 3, 4])
    assert [r["set_id"] for r in AnnotationStore(path).all_rankings()] == [done.set_id, todo.set_id]


def _first_set_ranked(served) -> tuple[Workspace, Browserless, list[str]]:
    """annotator001 signed in over HTTP, her first set ranked: (the workspace, her client, her three sets)."""
    base, store, invites, _ = served
    alice = Browserless(base)
    alice.request("POST", "/signin", form={"credential": invites["annotator001"]})
    sets = json.loads(alice.request("GET", "/api/me")[1])["sets"]
    assert alice.request("POST", "/api/rankings", data={"set_id": sets[0], "ranks": [1, 2, 3, 4]})[0] == 200
    return Workspace.at(str(store.path.parent)), alice, sets


def test_a_set_dropped_after_init_leaves_the_app_over_http(served, capsys):
    """Over HTTP: the annotator whose current set is retired gets their next set (not an error page), with "Set k
    of n" counting without it; a ranking of it sent from the page still open is refused (410) and not stored;
    the admin page and `annotate status` show the retirement; `annotate init` after the drop reports it; kept
    again, the set does not come back to her list, where its replacement stands."""
    base, store, _, admin_token = served
    ws, alice, (first, current, third) = _first_set_ranked(served)
    assert b"Set 2 of 3" in alice.request("GET", "/task")[1]
    work = ["build", "--workdir", str(ws.root), "annotate"]
    record_decision(ws, current, "drop", "a watermark in image 2")
    assert cli(work + ["init"]) == 0
    assert "0 new set(s), 1 retired (no longer kept; their rankings stay in the database), 7 kept set(s) offered" \
        in capsys.readouterr().out
    status, page, url = alice.request("GET", "/task")  # the retired set is replaced: her share stays 3
    assert (status, url) == (200, base + "/task") and b"Set 2 of 3" in page
    assert f"/img/{third}/0".encode() in page and b'id="withdrawn">1 set assigned to you' in page
    status, body, _ = alice.request("POST", "/api/rankings", data={"set_id": current, "ranks": [1, 2, 3, 4]})
    assert status == 410 and "withdrawn" in json.loads(body)["error"]
    me = json.loads(alice.request("GET", "/api/me")[1])
    assert (me["total"], me["done"], me["sets"][:2]) == (3, 1, [first, third])
    replacement = me["sets"][2]
    assert replacement not in {first, current, third}
    assert alice.request("POST", "/api/rankings", data={"set_id": third, "ranks": [1, 1, 3, 4]})[0] == 200
    assert b"Set 3 of 3" in alice.request("GET", "/task")[1]
    assert alice.request("POST", "/api/rankings", data={"set_id": replacement, "ranks": [4, 3, 2, 1]})[0] == 200
    status, page, _ = alice.request("GET", "/task")
    assert b"All 3 sets ranked" in page and b'id="withdrawn"' in page
    assert [r["set_id"] for r in store.all_rankings()] == [first, third, replacement]

    admin = Browserless(base)
    admin.request("POST", "/admin/signin", form={"token": admin_token})
    page = admin.request("GET", "/admin")[1].decode()
    assert "7 sets offered (1 retired: no longer kept in review)" in page and "3 rankings submitted ·" in page
    assert f'<tr class="retired"><th scope="row">{current}</th><td>retired</td>' in page
    assert "<th scope=\"row\">annotator001</th><td>3</td><td>3</td><td>1</td>" in page
    assert cli(work + ["status"]) == 0
    out = capsys.readouterr().out
    assert "2 annotators, 7 sets (and 1 retired), 3 rankings submitted;" in out and "annotator001: 3/3 (1 withdrawn)" in out

    record_decision(ws, current, "keep", "")  # the curator changes their mind: offered again, but not to her
    assert cli(work + ["init"]) == 0
    assert "0 new set(s), 1 kept again, 8 kept set(s) offered" in capsys.readouterr().out
    assert b"All 3 sets ranked" in alice.request("GET", "/task")[1]  # was "Set 4 of 4", past her share (max 3)
    assert alice.request("POST", "/api/rankings", data={"set_id": current, "ranks": [1, 2, 3, 4]})[0] == 410


def test_progress_summary_counts_rankings_of_retired_sets_apart_and_covers_offered_sets_only():
    """The admin page and `annotate status` each worked these totals out from progress(); both show ProgressSummary."""
    from pigbench.build.annotate.store import ProgressSummary

    def set_(assigned, ranked, retired=False):
        return {"assigned": assigned, "ranked": ranked, "retired": retired}

    progress = {"annotators": [{}, {}, {}], "sets": [set_(3, 1), set_(1, 0), set_(5, 2, retired=True), set_(2, 2)]}
    assert ProgressSummary.of(progress) == ProgressSummary(annotators=3, offered=3, retired=1, rankings=5,
                                                           retired_rankings=2, assigned=(1, 3), ranked=(0, 2))
    assert ProgressSummary.of({"annotators": [], "sets": [set_(2, 1, retired=True)]}) == ProgressSummary(
        annotators=0, offered=0, retired=1, rankings=1, retired_rankings=1, assigned=(0, 0), ranked=(0, 0))


def test_an_annotator_whose_unranked_sets_were_all_dropped_gets_new_sets_over_http(served, capsys):
    """Over HTTP: once every unranked set of hers was dropped in review, the task page showed "All 1 sets ranked";
    it now offers replacements up to her share, and signing in again gives no more."""
    base, store, invites, _ = served
    ws, alice, (first, second, third) = _first_set_ranked(served)
    for set_id in (second, third):
        record_decision(ws, set_id, "drop", "off-prompt")
    assert cli(["build", "--workdir", str(ws.root), "annotate", "init"]) == 0
    capsys.readouterr()
    status, page, _ = alice.request("GET", "/task")
    assert status == 200 and b"Set 2 of 3" in page and b'id="withdrawn">2 sets assigned to you' in page
    sets = json.loads(alice.request("GET", "/api/me")[1])["sets"]
    assert sets[0] == first and len(sets) == 3 and not set(sets[1:]) & {first, second, third}
    assert f"/img/{sets[1]}/0".encode() in page and alice.request("GET", f"/img/{sets[1]}/0")[0] == 200
    again = Browserless(base)
    again.request("POST", "/signin", form={"credential": invites["annotator001"]})
    assert json.loads(again.request("GET", "/api/me")[1])["sets"] == sets
