"""The LoRA picker of the video tabs (``ui/lora_picker.py``): its text <-> picks conversions, History's "Reuse
settings", and in a real browser: the LoRAs that fit the demo model listed (the others apart, with their reason),
one picked with a strength, a trigger word clicked into the prompt, the speed-up button, a card for each of
eight LoRAs, the job's request carrying the LoRA (its sidecar records it), and on a Chinese page the cards of
text typed while the switch to Chinese redraws the picker.

``CINESCRIBE_SCREENSHOT=1`` also writes ``docs/screenshots/lora-{en-desktop,zh-desktop,phone-390}.png``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import ROOT, start_app, stop_app
from tests.lora_files import write_header
from tests.test_browser import _MISSING, VIEWPORT, browser  # noqa: F401 (browser: the module's one Chromium)

SHOTS = ROOT / "docs" / "screenshots"
PHONE = {"width": 390, "height": 844}
RANK, WIDTH = 4, 24  # the demo Wan transformer: 2 heads of 12
WAIT = 30_000  # ms for the page to answer (2 CPU cores shared with other test runs)
T2V_MODEL = "wan2.1-t2v-1.3b"  # the text-to-video tab's first model
TWO = "styles/ink_wash:0.8, wan_lightx2v_4step:1"


# --- text <-> picks ----------------------------------------------------------------------------------------

def test_text_and_picks_convert_both_ways():
    from ui.lora_picker import picks_from_text, text_from_picks

    picks = picks_from_text("styles/ink.safetensors:0.5, motion , fast:-1.25")
    assert picks == [("styles/ink", 0.5), ("motion", 1.0), ("fast", -1.25)]
    assert text_from_picks(picks) == "styles/ink:0.5, motion:1, fast:-1.25"
    assert picks_from_text(text_from_picks(picks)) == picks
    assert text_from_picks([("a", 0.7000000000000001)]) == "a:0.7"  # a slider's float, written short
    assert picks_from_text("") == [] and picks_from_text("  ") == []


def test_dropdown_sliders_and_remove_rewrite_the_text():
    from ui.lora_picker import picked_names, with_strengths, without

    text = "a:0.5, b:1.5"
    assert picked_names(text, ["b", "a", "c"]) == "b:1.5, a:0.5, c:1"  # kept strengths, new ones at 1
    assert picked_names(text, ["b"]) == "b:1.5"
    assert picked_names(text, []) == ""
    assert picked_names("a:9", ["a"]) == "a:1"  # text that does not parse: the picks start afresh
    assert with_strengths(text, 0.25, -2.0, 1.0) == "a:0.25, b:-2"  # cards beyond the picks are ignored
    assert with_strengths(text, 3.0) == "a:2, b:1.5"  # clamped to -2..2; no value: kept
    assert without(text, 0) == "b:1.5" and without(text, 1) == "a:0.5" and without("a:1", 0) == ""


def test_bad_text_raises_the_request_error():
    from pipelines.studio.jobs import RequestError
    from ui.lora_picker import picks_from_text

    for bad, key in (("a:x", "lora_strength_type"), ("a:3", "lora_strength_range"), ("a, a:0.5", "lora_twice"),
                     ("../up", "lora_name")):
        with pytest.raises(RequestError) as caught:
            picks_from_text(bad)
        assert caught.value.key == key, bad


def test_recorded_loras_and_trigger_words():
    from ui.lora_picker import loras_text, with_trigger

    assert loras_text(None) == "" and loras_text("a:0.5") == "a:0.5"
    assert loras_text([{"name": "a", "strength": 0.5, "sha256": "00"}, {"file": "b.safetensors"}]) == "a:0.5, b:1"
    assert loras_text([["a", 2], "b"]) == "a:2, b:1"
    assert with_trigger("a cat", "ink style") == "a cat, ink style"
    assert with_trigger("a cat, ink style", "ink style") == "a cat, ink style"  # once
    assert with_trigger("", "ink style") == "ink style"


def test_reuse_settings_brings_the_loras_back(tmp_path):
    from pipelines.studio.history import HistoryEntry
    from ui.history_tab import reuse_values

    fields = {"prompt": object(), "loras": object()}

    def entry(settings):
        return HistoryEntry(key="k", task="t2v", state="done", created=0.0, title="p", settings=settings)

    assert reuse_values(entry({"prompt": "p", "loras": "a:0.5"}), fields, True)["loras"] == "a:0.5"
    assert reuse_values(entry({"prompt": "p", "loras": [{"name": "a", "strength": 2}]}), fields, True)["loras"] == "a:2"
    assert reuse_values(entry({"prompt": "p"}), fields, True)["loras"] == ""  # an older clip: the picker empties


def test_a_thumbnail_is_served_to_every_logged_in_user(tmp_path):
    """The card's picture goes to the page as Gradio's own copy in its upload folder, which the file guard
    (``ui/auth_access.py``) lets every logged-in user read; the LoRA folder itself is never served."""
    from gradio.processing_utils import save_pil_to_cache
    from PIL import Image

    from pipelines.studio.users import User, UserBook
    from ui.auth_access import Access
    from ui.lora_picker import _thumbnail

    picture = tmp_path / "loras" / "ink.png"
    picture.parent.mkdir()
    Image.new("RGB", (640, 320), (40, 90, 160)).save(picture)
    small = _thumbnail(picture)
    assert max(small.size) <= 192 and _thumbnail(tmp_path / "loras" / "gone.png") is None
    uploads = tmp_path / "uploads"
    served = Path(save_pil_to_cache(small, cache_dir=str(uploads)))  # what gr.Image does with the value
    book = UserBook([User("ana", "pw", "admin"), User("bo", "pw", "creator")])
    access = Access(book, outputs_dir=tmp_path / "outputs", upload_dir=uploads)
    assert access.may_read("bo", served.resolve()) and access.may_read("ana", served.resolve())


# --- the page ----------------------------------------------------------------------------------------------

def demo_lora(path: Path, metadata: dict | None = None, width: int = WIDTH) -> Path:
    """A rank-4 LoRA on the demo Wan transformer's self-attention queries (zeros: it changes nothing)."""
    shapes = {}
    for block in (0, 1):
        shapes[f"transformer.blocks.{block}.attn1.to_q.lora_A.weight"] = (RANK, width)
        shapes[f"transformer.blocks.{block}.attn1.to_q.lora_B.weight"] = (width, RANK)
    return write_header(path, shapes, metadata)


def lora_folder(folder: Path) -> Path:
    from PIL import Image

    tags = {"10_ink": {"ink wash": 12, "monochrome": 9, "brush strokes": 4}}
    demo_lora(folder / "styles" / "ink_wash.safetensors",
              {"ss_output_name": "Ink wash", "ss_tag_frequency": json.dumps(tags),
               "modelspec.trigger_phrase": "ink wash style, sumi-e"})
    Image.new("RGB", (64, 96), (40, 90, 160)).save(folder / "styles" / "ink_wash.png")
    demo_lora(folder / "wan_lightx2v_4step.safetensors")
    demo_lora(folder / "for_a_bigger_model.safetensors", width=5120)
    (folder / "cut_short.safetensors").write_bytes(b"\x10\x00")
    return folder


@pytest.fixture(scope="module")
def lora_app(tmp_path_factory, data_dir):
    base = tmp_path_factory.mktemp("lora_page")
    folder = lora_folder(base / "loras")
    app = start_app(base, data_dir, "--loras-dir", str(folder))
    yield app
    stop_app(app)


def shoot(page, name: str) -> None:
    if os.environ.get("CINESCRIBE_SCREENSHOT") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.mouse.move(0, 0)
        page.wait_for_timeout(600)
        page.evaluate("document.querySelector('#t2v-loras').scrollIntoView({block: 'start'})")
        page.wait_for_timeout(300)
        page.screenshot(path=str(SHOTS / f"lora-{name}.png"))


def open_loras(page):
    page.locator("#t2v-loras > button").first.click()
    expect(page.locator("#t2v-lora-note")).to_contain_text("2", timeout=WAIT)


def pick(page, label: str) -> None:
    box = page.locator("#t2v-lora-pick input").first
    box.click()
    page.get_by_role("option", name=label).click()
    page.keyboard.press("Escape")


if not _MISSING:
    from playwright.sync_api import expect


def test_the_api_takes_loras_last_and_old_calls_still_work(lora_app):
    from gradio_client import Client

    from tests.test_api import GOOD

    client = Client(lora_app.url, verbose=False, httpx_kwargs={"timeout": 120})  # 2 shared cores: be patient
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    for name in ("/t2v", "/i2v"):
        last = api[name]["parameters"][-1]
        assert (last["parameter_name"], last["parameter_default"]) == ("loras", ""), (name, last)
    assert [p["parameter_name"] for p in api["/t2v"]["parameters"]][:len(GOOD)] == list(GOOD)  # order kept
    status, *_ = client.predict(**GOOD, loras="ink_wash:0.25", api_name="/t2v")  # a file name alone: unique
    assert "Done" in status
    sidecar = max(lora_app.outputs.glob("*/*.json"), key=lambda p: p.stat().st_mtime)
    loras = json.loads(sidecar.read_text(encoding="utf-8"))["settings"]["loras"]
    assert [(lora["name"], lora["strength"]) for lora in loras] == [("styles/ink_wash", 0.25)]
    with pytest.raises(Exception, match=r"nope\.safetensors"):
        client.predict(**GOOD, loras="nope:1", api_name="/t2v")


@pytest.mark.browser
@pytest.mark.skipif(bool(_MISSING), reason=_MISSING or "-")
def test_a_lora_picked_in_the_page_reaches_the_job(lora_app, browser):
    from ui.lora_picker import loras_text

    context = browser.new_context(locale="en-US", viewport=VIEWPORT)
    try:
        page = context.new_page()
        page.goto(lora_app.url)
        expect(page.locator("#t2v-generate")).to_have_text("Generate", timeout=20_000)
        open_loras(page)
        expect(page.locator("#t2v-lora-note")).to_contain_text("2 LoRA(s)")
        page.locator("#t2v-lora-unusable > button").first.click()
        apart = page.locator("#t2v-lora-unusable")
        expect(apart).to_contain_text("for_a_bigger_model")
        expect(apart).to_contain_text("cut_short")
        expect(apart).to_contain_text("too short")  # the reason the library gives

        pick(page, "styles/ink_wash — Ink wash")
        text = page.locator("#t2v-lora-text textarea")
        expect(text).to_have_value("styles/ink_wash:1", timeout=WAIT)
        card = page.locator("#t2v-lora-0").first
        expect(card).to_contain_text("Training tags: ink wash, monochrome, brush strokes", timeout=WAIT)
        expect(card.locator("img")).to_be_visible()  # the picture beside the file
        strength = page.locator("#t2v-lora-0-strength input[type='number']")
        strength.fill("0.5")
        strength.press("Enter")
        strength.blur()
        expect(text).to_have_value("styles/ink_wash:0.5", timeout=WAIT)

        prompt = page.locator("#t2v-prompt textarea")
        prompt.fill("a heron in the reeds")
        card.get_by_role("button", name="sumi-e").click()
        expect(prompt).to_have_value("a heron in the reeds, sumi-e", timeout=WAIT)

        pick(page, "wan_lightx2v_4step")
        expect(text).to_have_value("styles/ink_wash:0.5, wan_lightx2v_4step:1", timeout=WAIT)
        speed = page.locator("#t2v-lora-1").first
        expect(speed).to_contain_text("4 steps", timeout=WAIT)
        shoot(page, "en-desktop")
        page.locator("#t2v-lora-1-speed").click()
        expect(speed).to_contain_text("Steps set to 4 and guidance to 1", timeout=WAIT)
        page.get_by_role("button", name="Advanced settings").click()
        steps = page.get_by_role("spinbutton", name="number input for Steps")
        expect(steps).to_have_value("4", timeout=WAIT)
        page.locator("#t2v-lora-1-remove").click()
        expect(text).to_have_value("styles/ink_wash:0.5", timeout=WAIT)
        expect(page.locator("#t2v-lora-1").first).to_be_hidden()

        page.locator("#t2v-generate").click()
        expect(page.locator("#t2v-status")).to_contain_text("Done", timeout=180_000)
        sidecars = sorted(lora_app.outputs.glob("*/*.json"))
        assert sidecars, "no sidecar written"
        recorded = json.loads(sidecars[-1].read_text(encoding="utf-8"))
        loras = recorded["settings"]["loras"]
        assert [(lora["name"], lora["strength"]) for lora in loras] == [("styles/ink_wash", 0.5)], loras
        assert loras_text(loras) == "styles/ink_wash:0.5"  # what History's "Reuse settings" gives the picker
        assert recorded["settings"]["prompt"] == "a heron in the reeds, sumi-e"

        page.locator("#t2v-lora-text textarea").fill("for_a_bigger_model:1")  # typed: refused at submit, named
        page.locator("#t2v-lora-text textarea").blur()
        expect(page.locator("#t2v-lora-0").first).to_contain_text("Does not fit", timeout=WAIT)
        page.locator("#t2v-generate").click()
        expect(page.locator("#t2v-status")).to_contain_text("for_a_bigger_model.safetensors", timeout=WAIT)

        page.locator("#t2v-model input").first.click()  # another family: the list follows it (I2V: one with none)
        page.get_by_role("option", name="LTX-2 19B (video + audio)").click()
        expect(page.locator("#t2v-lora-note")).to_contain_text("LTX-2 19B (video + audio)", timeout=WAIT)

        page.get_by_role("tab", name="History").click()  # Reuse settings brings the LoRA back into the picker
        page.locator("#history-table span").get_by_text("a heron in the reeds, sumi-e").click()
        expect(page.locator("#history-settings")).to_contain_text("ink_wash", timeout=WAIT)
        page.locator("#history-reuse").click()
        expect(text).to_have_value("styles/ink_wash:0.5", timeout=WAIT)
        expect(page.locator("#t2v-lora-0").first).to_contain_text("Ink wash", timeout=WAIT)
        expect(page.locator("#t2v-lora-note")).to_contain_text("2 LoRA(s)", timeout=WAIT)  # Wan again
        expect(page.locator("#t2v-lora-0-strength input[type='number']")).to_have_value("0.5")

        eight = [f"more/lora_{n}:0.{n}" for n in range(1, 7)]  # not in the folder: their cards say so
        text.fill(", ".join(["styles/ink_wash:0.5", "wan_lightx2v_4step:1", *eight]))
        text.blur()
        last = page.locator("#t2v-lora-7").first
        expect(last).to_contain_text("more/lora_6", timeout=WAIT)  # a card for each of eight
        expect(last).to_contain_text("Not in the LoRA folder")
        expect(page.locator("#t2v-lora-7-strength input[type='number']")).to_have_value("0.6")
        expect(page.locator("#t2v-lora-1").first).to_contain_text("4 steps")
        text.fill(text.input_value() + ", ninth")
        text.blur()
        expect(page.locator("#t2v-lora-note")).to_contain_text("9 LoRAs were given; at most 8", timeout=WAIT)
    finally:
        context.close()


@pytest.mark.browser
@pytest.mark.skipif(bool(_MISSING), reason=_MISSING or "-")
def test_cards_follow_text_typed_before_the_switch_to_chinese_redraws(lora_app, browser):
    """A Chinese page switches language once loaded, and that redraws the picker from the text it had then (none).
    Text typed before that redraw answers (here it is held back until the typed LoRAs' cards show) keeps its cards:
    the picker draws again from the text as it is now. Before, the late redraw hid them."""
    context = browser.new_context(locale="zh-CN", viewport=VIEWPORT)
    held = []

    def hold(route):
        data = (route.request.post_data_json or {}).get("data") or []
        if not held and data[:2] == [T2V_MODEL, ""]:  # the t2v picker's redraw for the language, from empty text
            held.append(route)
        else:
            route.continue_()

    try:
        page = context.new_page()
        page.route("**/gradio_api/run/predict", hold)
        page.goto(lora_app.url)
        expect(page.locator("#t2v-generate")).to_have_text("生成", timeout=20_000)
        page.locator("#t2v-loras > button").first.click()
        text = page.locator("#t2v-lora-text textarea")
        text.fill(TWO)
        text.blur()
        expect(page.locator("#t2v-lora-1").first).to_contain_text("加速 LoRA", timeout=WAIT)
        assert held, "the language redraw was not seen"
        with page.expect_response(lambda response: response.request.post_data == held[0].request.post_data) as late:
            held[0].continue_()
        late.value.finished()
        page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
        expect(page.locator("#t2v-lora-drawn textarea")).to_have_value(f"{T2V_MODEL}|zh|{TWO}", timeout=WAIT)
        expect(page.locator("#t2v-lora-1").first).to_contain_text("加速 LoRA", timeout=WAIT)
        expect(page.locator("#t2v-lora-0").first).to_contain_text("训练标签")
        expect(text).to_have_value(TWO)
    finally:
        context.close()


@pytest.mark.browser
@pytest.mark.skipif(bool(_MISSING), reason=_MISSING or "-")
def test_chinese_and_phone_pages_show_the_picker(lora_app, browser):
    contexts = []
    try:
        contexts.append(browser.new_context(locale="zh-CN", viewport=VIEWPORT))
        page = contexts[-1].new_page()
        page.goto(lora_app.url)
        expect(page.locator("#t2v-generate")).to_have_text("生成", timeout=20_000)
        page.locator("#t2v-loras > button").first.click()
        # typed before the switch to Chinese has redrawn the picker: test_cards_follow_text_typed_before_...
        expect(page.locator("#t2v-lora-note")).to_contain_text("个 LoRA 适用于", timeout=WAIT)
        page.locator("#t2v-lora-text textarea").fill(TWO)
        page.locator("#t2v-lora-text textarea").blur()
        expect(page.locator("#t2v-lora-1").first).to_contain_text("加速 LoRA", timeout=WAIT)
        expect(page.locator("#t2v-lora-0").first).to_contain_text("训练标签")
        page.locator("#t2v-lora-unusable > button").first.click()  # the reasons in Chinese, numbers kept
        apart = page.locator("#t2v-lora-unusable")
        expect(apart).to_contain_text("文件只有 2 字节：太短，不是 safetensors 文件。", timeout=WAIT)
        expect(apart).to_contain_text("为 5120 x 5120，而 Wan 2.1 T2V 1.3B（演示尺寸）的是 24 x 24")
        expect(apart).not_to_contain_text("Not for")
        shoot(page, "zh-desktop")
        page.get_by_role("tab", name="图片生成视频").click()  # I2V's default model, I2VGen-XL, takes none
        page.locator("#i2v-loras > button").first.click()
        expect(page.locator("#i2v-lora-note")).to_contain_text("I2VGen-XL 在这里不能使用 LoRA", timeout=WAIT)
        expect(page.locator("#i2v-lora-note")).to_contain_text("没有 LoRA 加载器")  # its reason, in Chinese too
        expect(page.locator("#i2v-lora-unusable")).to_be_hidden()
        page.locator("#i2v-model input").first.click()
        page.get_by_role("option", name="Wan 2.1 I2V 14B 480p", exact=True).click()
        expect(page.locator("#i2v-lora-note")).to_contain_text("2 个 LoRA 适用于 Wan 2.1 I2V 14B 480p",
                                                               timeout=WAIT)

        contexts.append(browser.new_context(locale="en-US", viewport=PHONE, device_scale_factor=1, is_mobile=True,
                                            has_touch=True))
        phone = contexts[-1].new_page()
        phone.goto(lora_app.url)
        expect(phone.locator("#t2v-generate")).to_have_text("Generate", timeout=20_000)
        phone.locator("#t2v-loras > button").first.click()
        phone.locator("#t2v-lora-text textarea").fill(TWO)
        phone.locator("#t2v-lora-text textarea").blur()
        card = phone.locator("#t2v-lora-1").first
        expect(card).to_contain_text("4 steps", timeout=WAIT)
        box = card.bounding_box()
        assert box and box["width"] <= PHONE["width"], f"a LoRA card wider than the phone: {box}"
        assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"] + 1, "sideways scroll"
        shoot(phone, "phone-390")
    finally:
        for context in contexts:
            context.close()
