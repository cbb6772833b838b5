"""Drives the dashboard in Debian's headless Chromium (Playwright, no
browser download) the way an administrator would, and prints what it saw
as JSON. Screenshots go to OUT_DIR.

    ui_check.py BASE_URL ADMIN_TOKEN JMBG OUT_DIR [DELIVERED_ID [X_ROAD_ID X_ROAD_REGISTRY]]

X_ROAD_ID: a request whose document came over X-Road with attachments;
X_ROAD_REGISTRY: its registry, whose panel says what its security server
allows.
"""
import json
import os
import sys

from playwright.sync_api import sync_playwright

base, token, jmbg, out = sys.argv[1:5]
delivered = sys.argv[5] if len(sys.argv) > 5 else None
x_road, x_road_registry = sys.argv[6:8] if len(sys.argv) > 7 else (None, None)
os.makedirs(out, exist_ok=True)
seen = {}

with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path=os.environ.get("JUMGW_CHROMIUM", "/usr/bin/chromium"),
        args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    )
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(base + "/ui")
    seen["redirected_to_login"] = page.url.endswith("/ui/login")
    page.fill("input[name=token]", "not-a-token")
    page.click("button")
    seen["bad_token_refused"] = page.locator(".banner.bad").count() == 1
    page.fill("input[name=token]", token)
    page.click("button")
    page.wait_for_url(base + "/ui")
    seen["counts"] = {
        s: int(page.inner_text(f"#count-{s}"))
        for s in ["queued", "sending", "awaiting", "retrying", "fetched", "delivered", "dead", "cancelled"]
    }
    seen["registries"] = {
        r: page.inner_text(f"#registry-{r} h3") for r in ["civil", "cadastre", "tax"]
    }
    seen["charts"] = page.locator("section.card svg").count()
    if x_road_registry:
        panel = page.locator(f"#registry-{x_road_registry} [data-x-road-missing]")
        seen["x_road_panel"] = panel.inner_text() if panel.count() else None
    page.screenshot(path=f"{out}/overview-en.png", full_page=True)
    for code, name, lang in [("sr", "Srpski", "sr-Latn"), ("hu", "Magyar", "hu")]:
        page.click(f"text={name}")
        page.wait_for_load_state()
        seen[f"lang_{code}"] = page.get_attribute("html", "lang") == lang
        seen[f"title_{code}"] = page.inner_text("header h1")
        page.screenshot(path=f"{out}/overview-{code}.png", full_page=True)
    page.click("text=English")
    page.wait_for_load_state()
    # Retry the first dead request from its row.
    row = page.locator("#stuck tr[data-id]").filter(has=page.locator("[data-state=dead]")).first
    rid = row.get_attribute("data-id")
    row.locator("button", has_text="Retry").click()
    page.wait_for_load_state()
    seen["retried"] = rid
    seen["banner"] = page.inner_text(".banner") if page.locator(".banner").count() else ""
    page.goto(f"{base}/ui/requests/{rid}")
    seen["timeline_items"] = page.locator("ol.timeline li").count()
    page.screenshot(path=f"{out}/request-en.png", full_page=True)
    if delivered:
        # A delivered document's page shows its timestamp.
        page.goto(f"{base}/ui/requests/{delivered}")
        el = page.locator("[data-timestamp]")
        seen["timestamp"] = el.get_attribute("data-timestamp") if el.count() else None
        seen["timestamp_text"] = el.inner_text() if el.count() else ""
    if x_road:
        # An X-Road document's page: each attempt's message id, the
        # attachments with their names and types.
        page.goto(f"{base}/ui/requests/{x_road}")
        seen["x_road_message_ids"] = [
            e.get_attribute("data-message-id") for e in page.locator("[data-message-id]").all()
        ]
        seen["x_road_attachments"] = [
            r.inner_text() for r in page.locator("table.attachments tr[data-attachment]").all()
        ]
        page.screenshot(path=f"{out}/request-x-road-en.png", full_page=True)
    page.goto(base + "/ui/deadlines")
    seen["deadline_rows"] = [r.inner_text() for r in page.locator("tbody tr").all()]
    page.screenshot(path=f"{out}/deadlines-en.png", full_page=True)
    page.goto(base + "/ui/audit")
    page.fill("input[name=jmbg]", jmbg)
    page.click("button.primary")
    page.wait_for_load_state()
    seen["who_rows"] = page.locator("#accesses tbody tr").count()
    seen["who_page_has_jmbg"] = jmbg in page.content()
    page.screenshot(path=f"{out}/audit-who-en.png", full_page=True)
    browser.close()

print(json.dumps(seen))
