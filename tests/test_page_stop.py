"""Stop after a clip's last step keeps that clip (decoding and writing finish), and the page says what was kept."""

from __future__ import annotations

from pipelines.device.worker import TaskContext
from pipelines.studio.jobs import JobState
from pipelines.tasks.t2v import T2VRequest
from tests.conftest import wait_finished
from ui.job_status import done_message


def test_stop_at_the_last_step_keeps_the_clip(worker, settings, monkeypatch):
    original = TaskContext.step

    def stop_at_last_step(self, clock, preview=None):
        original(self, clock, preview)
        if clock.done == clock.total and self.job.progress.clip == 1:
            worker.cancel(self.job.id)  # Stop, as the first clip's last step ends: decode and mp4 still to come

    monkeypatch.setattr(TaskContext, "step", stop_at_last_step)
    job = wait_finished(worker.submit("t2v", T2VRequest(prompt="a kite", resolution="240p", aspect="16:9", frames=9,
                                                        steps=3, clips=2)))
    assert job.state == JobState.DONE, job.error
    assert len(job.result["clips"]) == 1, "the second clip must not start after Stop"
    written = list(settings.outputs_dir.rglob("*.mp4"))
    assert [p.name for p in written] == [job.result["clips"][0]["video"].rsplit("/", 1)[-1]]
    assert "kept" in done_message("en", job, 1, str(written[0].parent))
    assert "保留" in done_message("zh", job, 1, str(written[0].parent))


def test_job_time_counts_from_its_start_and_the_wait_is_shown_apart():
    from pipelines.studio.jobs import Job

    job = Job(task="t2v", request=None, created=100.0, started=111.5, finished=118.6)
    message = done_message("en", job, 1, "outputs/today")
    assert "in 7.1 s" in message and "11.5 s waiting" in message
    assert "用时 7.1 秒" in done_message("zh", job, 1, "outputs/today")
    prompt = Job(task="t2v", request=None, created=100.0, started=100.2, finished=107.3)
    assert "waiting" not in done_message("en", prompt, 1, "outputs/today")  # no wait worth a word
