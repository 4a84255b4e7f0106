"""Engagement of Tessera's own emails, end to end: a journey sends an email through a
real SMTP server (aiosmtpd); its HTML carries an open pixel and tracked links under
the configured public URL; fetching them over HTTP records `Email Opened` and
`Email Link Clicked` on the recipient's profile (through the event log), and a link
redirects to where it pointed. A changed or forged token is refused and never
redirected; a destination with `trackEngagement: false` sends its links as written.
"""

from __future__ import annotations

import re
import uuid
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
import requests

from tessera_e2e import HTTP_TIMEOUT, assert_error, assert_ok, wait_until
from test_activation import Mailbox, create, profile_id

WAIT = 30.0
PUBLIC = "http://tessera.example.test:8443"


class Links(HTMLParser):
    """The `href` of every `<a>` and the `src` of every `<img>`."""

    def __init__(self):
        super().__init__()
        self.hrefs: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and attrs.get("href"):
            self.hrefs.append(attrs["href"])
        if tag == "img" and attrs.get("src"):
            self.images.append(attrs["src"])


def html_of(message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/html":
            return part.get_payload(decode=True).decode()
    raise AssertionError("no HTML part")


def local(server, public_url: str) -> str:
    """The same path on the server under test (the public URL is a name for it)."""
    assert public_url.startswith(PUBLIC + "/e/"), public_url
    return server.url + public_url[len(PUBLIC):]


@pytest.fixture
def mailbox():
    box = Mailbox()
    yield box
    box.stop()


def events_named(server, profile: int, name: str) -> list[dict]:
    r = server.admin("GET", f"/api/v1/profiles/{profile}/timeline", params={"limit": 100})
    assert r.status_code == 200, r.text
    return [e["message"] for e in r.json()["events"] if e["message"].get("event") == name]


def test_opens_and_clicks_of_a_journey_email_become_events(server_factory, mailbox):
    server = server_factory(extra_env={"TESSERA_PUBLIC_URL": PUBLIC + "/"})
    source = server.create_source("web")
    create(server, "/api/v1/destinations", {
        "id": "mail", "type": "email", "filter": {"includeEvents": False},
        "settings": {
            "smtpUrl": f"smtp://127.0.0.1:{mailbox.port}", "from": "Shop <shop@example.com>",
            "subject": "Welcome", "text": "Hi {{ traits.first_name }}: https://shop.example.com/start",
            "html": '<html><body><p>Hi {{ traits.first_name }},</p>'
                    '<a href="https://shop.example.com/start?utm=mail&amp;x=1">Start</a> '
                    "<a href='mailto:help@example.com'>help</a></body></html>",
        },
    })
    create(server, "/api/v1/journeys", {
        "key": "welcome", "trigger": {"event": "Signed Up"},
        "steps": [{"send": {"destination": "mail"}}],
    })
    user, address = f"eng-{uuid.uuid4().hex[:6]}", f"eng.{uuid.uuid4().hex[:6]}@example.com"
    assert_ok(server.post("/v1/identify", {"userId": user, "traits": {"email": address, "first_name": "Ada"}},
                          write_key=source.write_key))
    assert_ok(server.post("/v1/track", {"userId": user, "event": "Signed Up"}, write_key=source.write_key))
    wait_until(lambda: mailbox.to(address), timeout=WAIT, what="the welcome email")

    html = html_of(mailbox.to(address)[0])
    parsed = Links()
    parsed.feed(html)
    tracked = [h for h in parsed.hrefs if h.startswith(PUBLIC + "/e/c/")]
    assert len(tracked) == 1, html
    assert "mailto:help@example.com" in parsed.hrefs, "a mailto link is left as written"
    pixels = [src for src in parsed.images if src.startswith(PUBLIC + "/e/o/") and src.endswith(".gif")]
    assert len(pixels) == 1, html
    assert "shop.example.com" not in html, "the original URL is only inside the signed token"
    delivery_id = str(server.admin("GET", "/api/v1/deliveries", params={"destination": "mail"})
                      .json()["deliveries"][0]["id"])

    # The pixel: a GIF, and an `Email Opened` event on Ada's profile.
    r = requests.get(local(server, pixels[0]), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/gif" and r.content[:6] == b"GIF89a", r
    # The link: a redirect to the original URL (unescaped), and an event.
    r = requests.get(local(server, tracked[0]), allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert r.status_code == 302, r.text
    assert r.headers["Location"] == "https://shop.example.com/start?utm=mail&x=1"
    # Loaded again (mail clients do): still one event each.
    requests.get(local(server, pixels[0]), timeout=HTTP_TIMEOUT)
    requests.get(local(server, tracked[0]), allow_redirects=False, timeout=HTTP_TIMEOUT)

    ada = profile_id(server, f"user_id:{user}")
    wait_until(lambda: events_named(server, ada, "Email Opened") and events_named(server, ada, "Email Link Clicked"),
               timeout=WAIT, what="the open and the click on Ada's profile")
    opened = events_named(server, ada, "Email Opened")
    clicked = events_named(server, ada, "Email Link Clicked")
    assert len(opened) == 1 and len(clicked) == 1, (opened, clicked)
    assert opened[0]["userId"] == user
    assert opened[0]["properties"] == {"destination": "mail", "journey": "welcome", "messageId": delivery_id}
    assert clicked[0]["properties"] == {"destination": "mail", "journey": "welcome", "messageId": delivery_id,
                                        "url": "https://shop.example.com/start?utm=mail&x=1"}

    # Tampered: one character of the payload changed, the signature of another
    # link, a made-up token, the other route's token. Refused, coded, never a redirect.
    token = tracked[0].rsplit("/", 1)[1]
    payload, signature = token.split(".")
    flipped = payload[:-3] + ("A" if payload[-3] != "A" else "B") + payload[-2:]
    pixel_token = pixels[0].rsplit("/", 1)[1][:-len(".gif")]
    for bad in [f"{flipped}.{signature}", f"{payload}.{pixel_token.split('.')[1]}", "bm90LWEtdG9rZW4.c2ln",
                pixel_token, "x" * 9000]:
        r = requests.get(f"{server.url}/e/c/{bad}", allow_redirects=False, timeout=HTTP_TIMEOUT)
        assert r.status_code == 400 and "Location" not in r.headers, (bad[:40], r.status_code, r.headers)
        assert r.json()["code"] == "invalid_engagement_token", r.text
    assert_error(requests.get(f"{server.url}/e/o/{token}.gif", timeout=HTTP_TIMEOUT), 400, "invalid_engagement_token")
    assert_error(requests.get(f"{server.url}/e/o/{pixel_token}", timeout=HTTP_TIMEOUT), 400,
                 "invalid_engagement_token")
    # Nothing was recorded for them.
    assert len(events_named(server, ada, "Email Link Clicked")) == 1


def test_a_destination_can_turn_tracking_off(server_factory, mailbox):
    server = server_factory(extra_env={"TESSERA_PUBLIC_URL": PUBLIC})
    source = server.create_source("web")
    create(server, "/api/v1/destinations", {
        "id": "plain", "type": "email", "filter": {"events": ["Password Reset"]},
        "settings": {"smtpUrl": f"smtp://127.0.0.1:{mailbox.port}", "from": "shop@example.com",
                     "subject": "Reset", "text": "t", "trackEngagement": False,
                     "html": '<body><a href="https://shop.example.com/reset">reset</a></body>'},
    })
    shown = server.admin("GET", "/api/v1/destinations/plain").json()
    assert shown["settings"]["trackEngagement"] is False, shown
    address = f"plain.{uuid.uuid4().hex[:6]}@example.com"
    assert_ok(server.post("/v1/identify", {"userId": "plain-1", "traits": {"email": address}},
                          write_key=source.write_key))
    assert_ok(server.post("/v1/track", {"userId": "plain-1", "event": "Password Reset"}, write_key=source.write_key))
    wait_until(lambda: mailbox.to(address), timeout=WAIT, what="the reset email")
    html = html_of(mailbox.to(address)[0])
    assert '<a href="https://shop.example.com/reset">' in html and "/e/o/" not in html and PUBLIC not in html, html


def test_without_a_public_url_emails_are_sent_as_written(server_factory, mailbox):
    server = server_factory()
    source = server.create_source("web")
    create(server, "/api/v1/destinations", {
        "id": "m", "type": "email", "filter": {"events": ["Hello"]},
        "settings": {"smtpUrl": f"smtp://127.0.0.1:{mailbox.port}", "from": "shop@example.com",
                     "subject": "Hi", "text": "t", "html": '<a href="https://shop.example.com/">x</a>'},
    })
    address = f"off.{uuid.uuid4().hex[:6]}@example.com"
    assert_ok(server.post("/v1/identify", {"userId": "off-1", "traits": {"email": address}},
                          write_key=source.write_key))
    assert_ok(server.post("/v1/track", {"userId": "off-1", "event": "Hello"}, write_key=source.write_key))
    wait_until(lambda: mailbox.to(address), timeout=WAIT, what="the email")
    assert html_of(mailbox.to(address)[0]) == '<a href="https://shop.example.com/">x</a>'
    assert_error(requests.get(f"{server.url}/e/c/abc.def", allow_redirects=False, timeout=HTTP_TIMEOUT), 400,
                 "invalid_engagement_token")
