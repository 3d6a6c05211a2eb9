"""Real libx265 encodes of tiny generated clips: codec, size and sha256 match the job's output info."""

from __future__ import annotations

import hashlib
import io

import pytest

from .helpers import Api

pytestmark = pytest.mark.encode


@pytest.fixture(scope="module")
def api(server):
    a = Api(server)
    yield a
    a.close()


def _probe(data: bytes) -> dict:
    import av

    with av.open(io.BytesIO(data)) as c:
        v = c.streams.video[0]
        return {
            "codec": v.codec_context.name,
            "width": v.codec_context.width,
            "height": v.codec_context.height,
            "pix_fmt": v.codec_context.format.name,
            "profile": v.codec_context.profile,
            "audio": len(c.streams.audio),
            "format": c.format.name,
            "frames": sum(1 for _ in c.decode(video=0)),
        }


def test_encode_download_matches_output_info(api, clip):
    uid = api.upload(clip)
    created = api.create_job(uid, "sophon-espresso", metadata={"k": "v"})
    seen = set()
    while True:
        job = api.get(f"/v1/jobs/{created['id']}").json()
        seen.add(job["status"])
        assert 0 <= job["progress"]["percent"] <= 100
        if job["status"] in ("completed", "failed", "canceled"):
            break
    assert job["status"] == "completed", job["error"]
    assert job["effective_profile_id"] == "sophon-espresso"
    assert job["final_artifact"] == "encoded" and job["saved_percent"] > 0
    assert job["progress"]["percent"] == 100 and job["progress"]["frames_done"] == 15
    out = job["output"]
    assert out["state"] == "available" and out["retention_expires_at"]
    r = api.download(job["id"])
    assert r.status_code == 200
    assert r.headers["content-type"] == "video/mp4"
    assert int(r.headers["content-length"]) == out["bytes"] == len(r.content)
    assert r.headers["content-disposition"] == 'attachment; filename="clip.sophon.mp4"'
    assert hashlib.sha256(r.content).hexdigest() == out["sha256"]
    info = _probe(r.content)
    assert (
        (info["codec"], info["width"], info["height"])
        == ("hevc", out["width"], out["height"])
        == ("hevc", 160, 120)
    )
    assert info["frames"] == 15 and info["audio"] == 0 and out["audio"] is False
    assert info["pix_fmt"] == "yuv420p"


def test_mkv_10bit_downscale_with_audio(api, make_clip, tmp_path):
    src = make_clip(tmp_path / "av.mp4", seconds=1, size="160x120", audio=True)
    uid = api.upload(src)
    job = api.create_job(
        uid, "sophon-espresso-hq-10bit", output={"container": "mkv", "audio": True, "target_height": 144}
    )
    job = api.wait(job["id"])
    assert job["status"] == "completed", job["error"]
    # 144 > source height 120: no upscale
    assert (job["output"]["width"], job["output"]["height"]) == (160, 120)
    r = api.download(job["id"])
    info = _probe(r.content)
    assert r.headers["content-type"] == "video/x-matroska"
    assert info["format"] == "matroska,webm" and info["codec"] == "hevc"
    assert info["pix_fmt"] == "yuv420p10le" and info["profile"] == "Main 10"
    assert info["audio"] == 1 and job["output"]["audio"] is True


def test_downscale_keeps_aspect_and_even_dims(api, make_clip, tmp_path):
    src = make_clip(tmp_path / "wide.mp4", seconds=1, size="320x180")
    uid = api.upload(src)
    job = api.wait(api.create_job(uid, "sophon-espresso", output={"target_height": 145})["id"])
    assert job["status"] == "completed", job["error"]
    info = _probe(api.download(job["id"]).content)
    assert (info["width"], info["height"]) == (job["output"]["width"], job["output"]["height"]) == (256, 144)


def test_auto_picks_a_variant_and_returns_original_when_not_smaller(api, clip, tmp_path):
    import subprocess

    import imageio_ffmpeg

    job = api.wait(api.create_job(api.upload(clip), "sophon-auto")["id"])
    assert job["profile"] == "sophon-auto" and job["effective_profile_id"] == "sophon-cortado"
    assert job["final_artifact"] == "encoded" and 0 < job["saved_percent"] < 100

    # a flat grey clip at the lowest H.264 quality is already smaller than any HEVC re-encode
    flat = tmp_path / "flat.mp4"
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", "-f", "lavfi"]
        + ["-i", "color=c=gray:size=160x120:rate=15:duration=1", "-c:v", "libx264", "-crf", "51"]
        + ["-pix_fmt", "yuv420p", str(flat)],
        check=True,
    )
    job = api.wait(api.create_job(api.upload(flat), "sophon-auto")["id"])
    assert job["status"] == "completed" and job["final_artifact"] == "original" and job["saved_percent"] == 0
    data = flat.read_bytes()
    assert job["output"]["bytes"] == len(data) and job["output"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert api.download(job["id"]).content == data  # the output is the source itself


def test_forced_failure_hook(api, clip):
    job = api.wait(
        api.create_job(api.upload(clip), "sophon-espresso", metadata={"sophon_local_fail": True})["id"]
    )
    assert job["status"] == "failed" and "sophon_local_fail" in job["error"] and job["retryable"] is False
    r = api.get(f"/v1/jobs/{job['id']}/output")
    assert r.status_code == 409 and r.json()["error"]["code"] == "output_not_ready"


def test_cancel_stops_a_running_encode(api, make_clip, tmp_path):
    import time

    # 20 s of source read at its own frame rate: ffmpeg is still running when the cancel arrives
    src = make_clip(tmp_path / "long.mp4", seconds=20, size="160x120", rate=10)
    uid = api.upload(src)
    job = api.create_job(uid, "sophon-espresso", metadata={"sophon_local_realtime": True})
    deadline = time.monotonic() + 30
    while not (api.get(f"/v1/jobs/{job['id']}").json()["progress"]["frames_done"] or 0) > 0:
        assert time.monotonic() < deadline, "the encode never reported progress"
        time.sleep(0.05)
    started = time.monotonic()
    r = api.delete(f"/v1/jobs/{job['id']}")
    assert r.status_code == 200, r.text
    workers = api.server.core.workers
    while workers.busy:  # the worker lets go of the job once ffmpeg is killed
        assert time.monotonic() - started < 10, "ffmpeg was not stopped"
        time.sleep(0.02)
    final = api.get(f"/v1/jobs/{job['id']}").json()
    assert final["status"] == "canceled" and final["output"]["state"] == "pending"
    assert final["progress"]["frames_done"] < 200  # stopped before the end of the clip
    assert not list((api.server.data_dir / "outputs").glob(f"{job['id']}*"))
