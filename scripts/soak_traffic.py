#!/usr/bin/env python3
"""Steady traffic for scripts/soak.sh: submission (465, AUTH), MX ingress (25, STARTTLS) and HTTP
(/new, /, /account/delete) against one relay on loopback, for a given number of seconds.
Standard library only. Prints one JSON summary line at the end."""
import base64, http.client, json, random, smtplib, ssl, string, sys, time

ip, domain, p25, p465, p443, seconds, fixture = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]), sys.argv[7]
RATE = float(sys.argv[8]) if len(sys.argv) > 8 else 4.0  # transactions per second, all kinds
PW = "soak-password-correct-horse-9"
TEMPLATE = open(fixture, encoding="utf-8").read()
CTX = ssl.create_default_context()
CTX.check_hostname = False
CTX.verify_mode = ssl.CERT_NONE

def local():
    return "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(9))

def eml(frm, to):
    mid = f"<soak-{local()}@soak.test>"
    return TEMPLATE.replace("alice@fixture.test", frm).replace("bob@fixture.test", to).replace("<fixture@fixture.test>", mid)

def https(method, path, body=b"", ctype=None):
    c = http.client.HTTPSConnection(ip, p443, context=CTX, timeout=30)
    h = {"Host": f"{ip}:{p443}"}
    if ctype:
        h["Content-Type"] = ctype
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data

stats = {"submitted": 0, "ingress": 0, "http": 0, "deleted": 0, "errors": 0}
errors = []

def note(e):
    stats["errors"] += 1
    if len(errors) < 20:
        errors.append(repr(e)[:200])

def login(user):
    s = smtplib.SMTP_SSL(ip, p465, context=CTX, timeout=30)
    s.ehlo("soak.example")
    s.login(user, PW)
    return s

def fresh_pair():
    # Sender and recipient accounts, made by their first login (ACC-6).
    a, b = f"{local()}@{domain}", f"{local()}@{domain}"
    login(b).quit()
    return a, login(a), b

alice, sub, bob = fresh_pair()
mx = None
deadline = time.time() + seconds
i = 0
while time.time() < deadline:
    t0 = time.time()
    i += 1
    try:
        kind = i % 8
        if kind in (0, 1, 2, 3):  # submission: local + remote recipient, connection reused
            sub.sendmail(alice, [bob, "far@remote.example"], eml(alice, bob))
            stats["submitted"] += 1
        elif kind in (4, 5):  # MX ingress over STARTTLS
            if mx is None:
                mx = smtplib.SMTP(ip, p25, timeout=30)
                mx.ehlo("peer.example")
                mx.starttls(context=CTX)
                mx.ehlo("peer.example")
            mx.sendmail("peer@remote.example", [bob], eml("peer@remote.example", bob))
            stats["ingress"] += 1
        elif kind == 6:
            st, _ = https("POST", "/new")
            assert st in (200, 429), st
            st, _ = https("GET", "/")
            assert st == 200, st
            stats["http"] += 2
        else:
            if i % 400 == 7:  # rotate accounts: delete the recipient over HTTP, start afresh
                body = json.dumps({"email": bob, "password": PW}).encode()
                st, data = https("POST", "/account/delete", body, "application/json")
                assert st in (200, 429), (st, data)
                stats["deleted"] += st == 200
                sub.quit()
                if mx is not None:
                    mx.quit()
                    mx = None
                alice, sub, bob = fresh_pair()
            else:
                st, _ = https("GET", "/healthz")
                assert st == 200, st
                stats["http"] += 1
    except Exception as e:  # keep going; count and show a few
        note(e)
        try:
            sub.quit()
        except Exception:
            pass
        try:
            alice, sub, bob = fresh_pair()
        except Exception as e2:
            note(e2)
            time.sleep(1)
        mx = None
    time.sleep(max(0.0, 1.0 / RATE - (time.time() - t0)))

stats["error_samples"] = errors
print(json.dumps(stats))
