"""job.training.extra: labelled pictures in the folder-per-class layout, read through the contract's preprocessing,
cached, split by content so that the holdout never leaks into training as the folder grows."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import seven
from job.training.extra import ExtraDataError, in_holdout, load_extra
from lenet_client.pictures import PICTURE_SUFFIXES, open_picture
from lenet_client.preprocess import to_mnist


def picture(folder, name, variant):
    """A seven drawn a little differently for each `variant`: different bytes, a different content hash."""
    folder.mkdir(parents=True, exist_ok=True)
    box = (40 + variant % 30, 30 + variant % 7, 150, 170 - variant % 20)
    seven(box=box, width=8 + variant % 5).save(folder / name)
    return folder / name


def test_pictures_are_preprocessed_by_the_contract_split_by_content_and_versioned(tmp_path):
    extra = tmp_path / "extra"
    paths = [picture(extra / "7", f"{i}.png", i) for i in range(30)]
    picture(extra / "7" / "nested" / "deeper", "n.png", 31)
    data = load_extra(extra, tmp_path / "cache")
    assert len(data.train_labels) + len(data.holdout_labels) == 31 and set(data.train_labels) <= {7}
    assert 0 < len(data.holdout_labels) < 31  # about one in five
    expected = to_mnist(open_picture(paths[0]))  # the predictor's own preprocessing, not a copy
    assert any(np.array_equal(expected, image) for image in [*data.train_images, *data.holdout_images])
    # The same folder again: same version, same split, every picture from the cache.
    again = load_extra(extra, tmp_path / "cache")
    assert again.version == data.version and np.array_equal(again.holdout_images, data.holdout_images)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 31


def test_a_growing_folder_never_moves_a_picture_from_the_holdout_into_training(monkeypatch, tmp_path):
    import lenet_client.preprocess

    extra = tmp_path / "extra"
    for i in range(20):
        picture(extra / str(i % 10), f"{i}.png", i)
    before = load_extra(extra, tmp_path / "cache")
    for i in range(20, 70):
        picture(extra / str(i % 10), f"{i}.png", i)
    made = []
    original = lenet_client.preprocess.to_mnist
    monkeypatch.setattr(lenet_client.preprocess, "to_mnist", lambda image: made.append(1) or original(image))
    after = load_extra(extra, tmp_path / "cache")
    assert len(made) == 50  # the 50 new pictures, and only them: the first 20 come from the cache
    held = {image.tobytes() for image in before.holdout_images}
    assert held <= {image.tobytes() for image in after.holdout_images}
    assert not held & {image.tobytes() for image in after.train_images}
    assert after.version != before.version


def test_duplicates_count_once_and_a_picture_under_two_labels_is_a_listed_conflict(tmp_path):
    extra = tmp_path / "extra"
    one = picture(extra / "7", "a.png", 1)
    (extra / "7" / "copy.png").write_bytes(one.read_bytes())
    (extra / "1").mkdir()
    (extra / "1" / "mislabelled.png").write_bytes(picture(extra / "7", "b.png", 2).read_bytes())
    picture(extra / "7", "c.png", 3)
    data = load_extra(extra, tmp_path / "cache")
    assert len(data.train_labels) + len(data.holdout_labels) == 2  # a (once) and c; b is in conflict
    (conflict,) = data.conflicts
    assert conflict["labels"] == [1, 7] and len(conflict["paths"]) == 2


def test_files_that_cannot_be_used_are_skipped_with_their_reason(tmp_path):
    extra = tmp_path / "extra"
    for i in range(30):
        picture(extra / "7", f"{i}.png", i)
    (extra / "7" / "notes.txt").write_text("not a picture")
    (extra / "7" / "broken.png").write_bytes(b"\x89PNG broken")
    from PIL import Image
    Image.new("L", (60, 60), 255).save(extra / "7" / "blank.png")
    os.mkfifo(extra / "7" / "pipe.png")  # reading it would wait forever
    data = load_extra(extra, tmp_path / "cache")
    reasons = {s.path.rsplit("/", 1)[1]: s.reason for s in data.skipped}
    assert set(reasons) == {"notes.txt", "broken.png", "blank.png", "pipe.png"}
    assert "not a regular file" in reasons["pipe.png"]
    assert "not a picture file" in reasons["notes.txt"] and "no ink" in reasons["blank.png"]
    assert len(data.train_labels) + len(data.holdout_labels) == 30


def test_pictures_saved_by_browsers_and_scanners_are_used_and_heic_is_named(tmp_path):
    extra = tmp_path / "extra"
    for i in range(10):
        picture(extra / "7", f"{i}.png", i)
    seven(mode="RGB").save(extra / "7" / "saved.jfif", "JPEG")
    seven(box=(50, 40, 140, 160)).save(extra / "7" / "scan.pgm", "PPM")
    (extra / "7" / "IMG_0001.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(200))
    data = load_extra(extra, tmp_path / "cache")
    assert len(data.train_labels) + len(data.holdout_labels) == 12
    ((path, reason),) = [(s.path, s.reason) for s in data.skipped]
    assert path.endswith("IMG_0001.heic") and "HEIC, an iPhone camera's format" in reason


def test_a_cache_that_cannot_be_written_costs_time_not_pictures(tmp_path):
    """A read-only data folder or a full disk is no reason to leave out a picture, nor to blame one."""
    extra = tmp_path / "extra"
    for i in range(12):
        picture(extra / str(i % 3), f"{i}.png", i)
    reference = load_extra(extra, tmp_path / "good-cache")
    (tmp_path / "not-a-folder").write_text("")  # the cache's parent is a file: every write fails, even as root
    data = load_extra(extra, tmp_path / "not-a-folder")
    assert not data.skipped and data.version == reference.version
    assert np.array_equal(data.train_images, reference.train_images)
    assert "not-a-folder" in data.cache_problem and "cannot be written" in data.cache_problem
    assert reference.cache_problem is None


def test_a_disk_that_fills_half_way_through_the_cache_loses_no_picture(monkeypatch, tmp_path):
    import job.training.extra

    extra = tmp_path / "extra"
    for i in range(12):
        picture(extra / str(i % 3), f"{i}.png", i)
    reference = load_extra(extra, tmp_path / "reference-cache")
    writes = []
    real_save = np.save

    def save_until_full(stream, array):
        writes.append(1)
        if len(writes) > 5:
            raise OSError(28, "No space left on device")
        real_save(stream, array)

    monkeypatch.setattr(job.training.extra.np, "save", save_until_full)
    data = load_extra(extra, tmp_path / "cache")
    assert not data.skipped and data.version == reference.version
    assert "No space left on device" in data.cache_problem
    assert len(writes) == 6  # after the first failure it stops trying
    assert not [p for p in (tmp_path / "cache").rglob("*") if "partial" in p.name]  # no half-written entry


@pytest.mark.parametrize("damage", ["truncated", "not an array file", "another shape", "another type", "a folder",
                                    "a pipe", "a huge shape"])
def test_a_damaged_cache_entry_is_made_again(tmp_path, damage):
    extra = tmp_path / "extra"
    picture(extra / "7", "a.png", 1)
    first = load_extra(extra, tmp_path / "cache")
    (entry,) = (tmp_path / "cache").rglob("*.npy")
    if damage == "truncated":
        entry.write_bytes(entry.read_bytes()[:60])
    elif damage == "not an array file":
        entry.write_bytes(b"\x00" * 900)
    elif damage == "another shape":
        np.save(entry, np.zeros((32, 32), np.uint8))
    elif damage == "another type":
        np.save(entry, np.zeros((28, 28), np.float64))
    elif damage == "a huge shape":  # a header that promises 10^12 bytes
        header = entry.read_bytes().replace(b"(28, 28)", b"(1000000, 1000000)")
        entry.write_bytes(header)
    else:
        entry.unlink()
        entry.mkdir() if damage == "a folder" else os.mkfifo(entry)
    again = load_extra(extra, tmp_path / "cache")
    assert not again.skipped and again.version == first.version
    assert np.array_equal([*again.train_images, *again.holdout_images], [*first.train_images, *first.holdout_images])


@pytest.mark.parametrize("layout, message", [
    ("missing", "no such folder"),
    ("empty", "holds no labelled pictures"),
    ("a class folder named cat", "class folder cat is not a digit"),
    ("mostly bad", "3 of 4 files cannot be used"),
])
def test_a_folder_that_cannot_be_used_is_one_named_error(tmp_path, layout, message):
    extra = tmp_path / "extra"
    if layout != "missing":
        extra.mkdir()
    if layout == "a class folder named cat":
        picture(extra / "cat", "a.png", 1)
    if layout == "mostly bad":
        picture(extra / "7", "a.png", 1)
        for name in ("x.png", "y.png", "z.png"):
            (extra / "7" / name).write_bytes(b"junk")
    with pytest.raises(ExtraDataError) as raised:
        load_extra(extra, tmp_path / "cache")
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_pictures_waiting_in_unsure_are_counted_not_trained_on(tmp_path):
    """`lenet-predict --sort-into` puts the pictures the model was unsure of in unsure/: a person labels them by
    moving each into its digit's folder. Until then they are no digit's."""
    extra = tmp_path / "extra"
    for i in range(3):
        picture(extra / "unsure", f"{i}.png", i)
    with pytest.raises(ExtraDataError, match=r"holds no labelled pictures; 3 in unsure/ wait for a person to move"):
        load_extra(extra, tmp_path / "cache")
    picture(extra / "4", "a.png", 9)
    pictures = load_extra(extra, tmp_path / "cache")
    assert pictures.waiting == 3 and len(pictures.train_labels) + len(pictures.holdout_labels) == 1


def test_the_holdout_rule_is_about_one_in_five():
    import hashlib

    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(5000)]
    assert 0.18 < sum(map(in_holdout, hashes)) / len(hashes) < 0.22


def test_the_extra_training_pictures_are_repeated_to_their_share_of_each_epoch(tmp_path):
    import torch

    from job.training.data import MnistData, Split
    from job.training.extra import with_extra

    extra = tmp_path / "extra"
    for i in range(40):
        picture(extra / str(i % 2 * 6 + 1), f"{i}.png", i)  # sevens and ones
    pictures = load_extra(extra, tmp_path / "cache")
    mnist = Split(torch.zeros(3000, 1, 28, 28), torch.zeros(3000, dtype=torch.long))
    data = MnistData(mnist, mnist, "data_dir", tmp_path, {})
    mixed, repeats = with_extra(data, pictures, share=0.1, normalize=False)
    n = len(pictures.train_labels)
    assert repeats == round(0.1 / 0.9 * 3000 / n) and len(mixed.train) == 3000 + repeats * n
    extra_part = mixed.train.images[3000:3000 + n, 0]
    assert torch.equal(extra_part, torch.from_numpy(pictures.train_images).float() / 255)
    assert 0.08 < repeats * n / len(mixed.train) < 0.12
    assert torch.equal(mixed.extra_holdout.labels, torch.from_numpy(pictures.holdout_labels))
    assert torch.equal(mixed.train.images[:3000], mnist.images)  # MNIST itself is untouched


@pytest.fixture
def extra_folder(tmp_path):
    folder = tmp_path / "extra"
    for i in range(40):
        picture(folder / "7", f"{i}.png", i)
    (folder / "7" / "notes.txt").write_text("not a picture")
    return folder


def test_a_run_with_extra_data_reports_what_it_learned_from_and_how_it_reads_the_holdout(outputs, real_data_dir,
                                                                                          extra_folder, monkeypatch,
                                                                                          capfd):
    import json

    from conftest import TINY, job_in_process
    from job.outcome.report import read_report

    old_runs = {p.name for p in (outputs / "runs").iterdir()}
    code, _, stderr = job_in_process(monkeypatch, capfd, outputs, real_data_dir, extra_data=extra_folder,
                                     extra_min_holdout=0)
    assert code == 0, stderr
    assert stderr.splitlines() == [f"lenet-mnist: warning: LENET_EXTRA_DATA: {extra_folder / '7' / 'notes.txt'}: "
                                        f"not a picture file (allowed: {' '.join(PICTURE_SUFFIXES)}); "
                                        f"left out"]
    (run_dir,) = [p for p in (outputs / "runs").iterdir() if p.name not in old_runs]
    report = read_report(run_dir / "report.json")
    info = report.extra_data
    expected = load_extra(extra_folder, outputs.parent / "cache")
    assert info.version == expected.version and info.folder == str(extra_folder)
    assert info.train_pictures["7"] + info.holdout_pictures["7"] == 40 and [s.path for s in info.skipped] == [
        str(extra_folder / "7" / "notes.txt")]
    assert report.data.train_images == TINY["train_limit"]  # MNIST's count; the extra pictures are counted apart
    (variant,) = report.variants
    holdout = variant.extra_holdout
    assert holdout.images == info.holdout_pictures["7"] == sum(map(sum, holdout.confusion_matrix))
    assert "confusion_extra_plain" in report.plots
    assert json.loads((outputs / "latest.json").read_text())["run_id"] == run_dir.name


def test_too_few_pictures_to_judge_are_said_and_do_not_replace_the_published_model(outputs, real_data_dir,
                                                                                    monkeypatch, capfd, tmp_path):
    """The README's own example: one picture, sorted into labelled/, then a run on it. The retrained model's reading
    of pictures of that kind is unseen; it may not replace the published model (exit 13), and where none is
    published yet it is published (nothing to lose), with a warning that says which."""
    from conftest import job_in_process, published_files
    from job.outcome.report import read_report
    from lenet_client.sort import content_hash

    labelled = tmp_path / "labelled"
    (labelled / "7").mkdir(parents=True)
    seven().save(labelled / "7" / "digit-7.png")
    held_out = int(in_holdout(content_hash((labelled / "7" / "digit-7.png").read_bytes())))
    before = published_files(outputs)
    code, stdout, stderr = job_in_process(monkeypatch, capfd, outputs, real_data_dir, extra_data=labelled)
    too_few = (f"LENET_EXTRA_DATA: {held_out} pictures held out, fewer than LENET_EXTRA_MIN_HOLDOUT=20: too few to "
               f"judge a retrained model on pictures of their kind (about 1 picture in 5 is held out, by its content: "
               f"label about 100 or more)")
    assert code == 13 and stderr == f"lenet-mnist: {too_few}; the published run stays (nothing was trained)\n"
    assert "Epoch:" not in stdout  # it could not replace the published model: not trained to find that out
    assert published_files(outputs) == before
    (report,) = [r for r in map(read_report, (outputs / "runs").glob("*/report.json")) if r.extra_data]
    assert not report.published and report.status == "holdout_too_small" and report.variants == []

    # A model published while it trained: the run is judged again at its end, and the published one stays.
    from job.outcome.finish import RunFacts, too_few_to_judge
    from job.settings import load_settings

    facts = RunFacts(run_id="new", started_at=report.started_at, device=report.device, variants_in_parallel=False,
                     data=None, extra_data=report.extra_data, variants=[], plots=[])
    failure = too_few_to_judge(facts, load_settings(output_dir=outputs, extra_data=labelled))
    assert failure is not None and failure.status.code == 13

    fresh = tmp_path / "fresh" / "outputs"
    fresh.parent.mkdir()
    code, _, stderr = job_in_process(monkeypatch, capfd, fresh, real_data_dir, extra_data=labelled)
    assert code == 0 and stderr == f"lenet-mnist: warning: {too_few}; no model is published yet, so this run may be\n"
    assert (fresh / "latest.json").is_file()


def test_an_extra_folder_that_cannot_be_used_stops_the_run_before_training_with_exit_3(outputs, real_data_dir,
                                                                                      extra_folder, monkeypatch,
                                                                                      capfd):
    from conftest import job_in_process, published_files
    from job.outcome.report import read_report

    picture(extra_folder / "cat", "a.png", 1)
    before = published_files(outputs)
    code, _, stderr = job_in_process(monkeypatch, capfd, outputs, real_data_dir, extra_data=extra_folder)
    assert code == 3 and stderr.count("\n") == 1, stderr
    assert "data problem: LENET_EXTRA_DATA=" in stderr and "class folder cat is not a digit" in stderr
    assert published_files(outputs) == before
    (report,) = [read_report(p) for p in (outputs / "runs").glob("*/report.json") if read_report(p).status == "failed"]
    assert report.variants == [] and report.exit_code == 3


def test_the_champion_check_judges_the_published_model_again_on_todays_holdout(outputs, real_data_dir, tmp_path):
    """The published model's own report knows nothing of today's holdout: its ONNX file is evaluated on it, and a
    new model may not read it worse (and may not be worse on the MNIST test set beyond the tolerance)."""
    from job.outcome.champion import SameGround, check_champion, onnx_accuracy, published_onnx
    from job.training.data import read_split

    extra = tmp_path / "extra"
    for i in range(40):
        picture(extra / str(i % 2 * 6 + 1), f"{i}.png", i)
    pictures = load_extra(extra, tmp_path / "cache")
    images, labels = read_split(real_data_dir, train=False, limit=300)
    published = onnx_accuracy(published_onnx(outputs)["plain"], pictures.holdout_images, pictures.holdout_labels)
    on_test = onnx_accuracy(published_onnx(outputs)["plain"], images.numpy(), labels.numpy())

    def check(new_holdout, new_test):
        ground = SameGround(images.numpy(), labels.numpy(), pictures.holdout_images, pictures.holdout_labels,
                            {"plain": new_holdout})
        return check_champion({"plain": new_test}, outputs, tolerance=0.01, same_ground=ground)

    same = check(published, on_test)
    assert same.passed and same.published_holdout_accuracy == {"plain": published} and same.published_accuracy == {
        "plain": on_test} and same.holdout_images == len(pictures.holdout_labels)
    assert not check(published - 0.01, on_test).passed  # worse on the holdout, by any amount
    assert check(published, on_test - 0.005).passed and not check(published, on_test - 0.02).passed  # MNIST: tolerance


def test_a_run_with_extra_data_and_the_champion_check_reports_both_models_on_the_holdout(outputs, real_data_dir,
                                                                                        extra_folder, monkeypatch,
                                                                                        capfd):
    from conftest import job_in_process
    from job.outcome.report import read_report

    def run(**settings):
        return job_in_process(monkeypatch, capfd, outputs, real_data_dir, extra_data=extra_folder,
                              extra_min_holdout=0, **settings)

    code, _, stderr = run()
    assert code == 0, stderr
    # The same data and seed again: the same model, so not worse anywhere; it publishes, and says why.
    champion_on = {"champion_check": "true", "champion_tolerance": 0}
    code, _, stderr = run(**champion_on)
    assert code == 0, stderr
    report = max((read_report(p) for p in (outputs / "runs").glob("*/report.json")), key=lambda r: r.started_at)
    champion = report.champion
    assert champion.holdout_images == report.extra_data.holdout_pictures["7"] > 0
    assert champion.new_holdout_accuracy == champion.published_holdout_accuracy == {
        "plain": report.variants[0].extra_holdout.accuracy}
    assert champion.new_accuracy == champion.published_accuracy and champion.passed and report.published

    # The holdout grows: the published model is judged on the grown one, and the outcome follows the figures.
    for i in range(40, 100):
        picture(extra_folder / "7", f"{i}.png", i + 100)
    code, _, stderr = run(**champion_on)
    grown = max((read_report(p) for p in (outputs / "runs").glob("*/report.json")), key=lambda r: r.started_at)
    champion = grown.champion
    assert champion.holdout_images == grown.extra_data.holdout_pictures["7"] > report.extra_data.holdout_pictures["7"]
    assert champion.compared_with_run == report.run_id and set(champion.published_holdout_accuracy) == {"plain"}
    fair = all(champion.new_accuracy[v] >= champion.published_accuracy[v] and
               champion.new_holdout_accuracy[v] >= champion.published_holdout_accuracy[v] for v in ["plain"])
    assert champion.passed == fair == grown.published and code == (0 if fair else 7), stderr


def test_a_warm_start_trains_on_from_the_published_weights_and_the_report_names_them(monkeypatch, capfd, outputs,
                                                                                     real_data_dir):
    """LENET_WARM_START: each variant starts from the published model's weights. With a learning rate of 1e-9 the
    weights hardly move, so the new model.pt is the published one to within rounding, and far from where a run
    without it starts."""
    import json

    import torch

    from conftest import job_in_process
    from job.outcome.report import read_report

    latest = json.loads((outputs / "latest.json").read_text())
    champion_file = latest["models"]["plain"]["state_dict"]
    champion = torch.load(outputs / champion_file, weights_only=True)

    def run(**settings):
        code, stdout, stderr = job_in_process(monkeypatch, capfd, outputs, real_data_dir, learning_rate=1e-9,
                                              momentum=0, **settings)
        assert code == 0, stderr
        newest = json.loads((outputs / "latest.json").read_text())
        weights = torch.load(outputs / newest["models"]["plain"]["state_dict"], weights_only=True)
        report = read_report(outputs / newest["report"])
        return max(float((weights[k] - champion[k]).abs().max()) for k in champion), report.variants[0], stdout

    difference, variant, stdout = run(warm_start="true")
    assert difference < 1e-6 and variant.warm_start == champion_file
    assert f"[plain] 61,706 parameters (layers: models/plain/summary.txt), training on cpu, starting from the " \
           f"published {champion_file}" in stdout
    from job.training.model import build_model
    torch.manual_seed(0)  # where the run would have started without it: LENET_SEED's random weights
    fresh = build_model("plain", 0.0).state_dict()
    assert max(float((fresh[k] - champion[k]).abs().max()) for k in champion) > 0.01
    # The seed recipe sees pixels in [0, 1], the published model standardized ones: its weights would not fit; a
    # variant with nothing published starts from random weights too.
    from job.outcome.champion import warm_starts
    assert warm_starts(outputs, ("plain", "bn_dropout"), 0.0) == {"plain": None, "bn_dropout": None}
    now_published = json.loads((outputs / "latest.json").read_text())["models"]["plain"]["state_dict"]
    assert warm_starts(outputs, ("plain", "bn_dropout"), 0.1307) == {"plain": now_published, "bn_dropout": None}


def test_a_warm_start_from_a_published_model_that_cannot_be_read_stops_before_training(monkeypatch, capfd, outputs,
                                                                                      real_data_dir):
    import json

    from conftest import job_in_process, published_files
    from job.outcome.status import DAMAGED

    latest = json.loads((outputs / "latest.json").read_text())
    published_model = outputs / latest["models"]["plain"]["state_dict"]
    real = published_model.read_bytes()
    published_model.write_bytes(b"not a checkpoint")
    before = published_files(outputs)
    # Both variants side by side: neither starts (bn_dropout has no published model; it would have trained).
    code, stdout, stderr = job_in_process(monkeypatch, capfd, outputs, real_data_dir, warm_start="true",
                                          variants="plain,bn_dropout", parallel_variants="true")
    assert code == DAMAGED.code and "Epoch" not in stdout and "side by side" not in stdout, stdout
    assert stderr.count("\n") == 1 and "LENET_WARM_START" in stderr and "model.pt" in stderr, stderr
    assert published_files(outputs) == before
    # latest.json naming the plain model as bn_dropout's: refused, not loaded into the wrong network.
    published_model.write_bytes(real)
    latest["models"]["bn_dropout"] = latest["models"]["plain"]
    (outputs / "latest.json").write_text(json.dumps(latest))
    code, stdout, stderr = job_in_process(monkeypatch, capfd, outputs, real_data_dir, warm_start="true",
                                          variants="bn_dropout")
    assert code == DAMAGED.code and "is a plain model" in stderr and "Epoch" not in stdout, stderr


def test_the_labelling_loop_sort_label_by_moving_retrain_and_read_again(monkeypatch, capfd, outputs, real_data_dir,
                                                                          tmp_path):
    """docs/retraining.md's loop on pictures of a new source (digits drawn here, 3 of each): lenet-predict sorts
    them into labelled/<digit or unsure>/; a person moves each misread or unsure one into its digit's folder, and
    by mistake puts one picture under two digits and another twice under its own; the nightly run learns from the
    folder with the champion check on; the report says what it learned from, what it left out and why the model
    was or was not published; the next lenet-predict reads the published model."""
    import json
    import shutil
    import subprocess

    import numpy as np

    from bench.families import drawn, on_paper
    from conftest import job_in_process
    from job.outcome.report import read_report

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    rng = np.random.default_rng(4)
    truth = {}
    for index in range(30):
        digit = index % 10
        name = f"scan-{index:02d}.png"
        on_paper(drawn(digit, rng).resize((60, 90)), contrast=0.8).save(inbox / name)
        truth[name] = str(digit)
    labelled = tmp_path / "labelled"

    def predict(*arguments):  # lenet-predict in this process (its main is what the command runs)
        from lenet_client.predict import main

        code = main(list(arguments))
        out, err = capfd.readouterr()
        return subprocess.CompletedProcess(arguments, code, out, err)

    sorted_once = predict("--json", str(outputs), str(inbox), "--sort-into", str(labelled))
    assert sorted_once.returncode == 0, sorted_once.stderr
    read = {Path(r["path"]).name: r for r in json.loads(sorted_once.stdout)["results"]}
    assert set(read) == set(truth)
    sorted_files = {path.name: path.parent.name for path in labelled.rglob("*.png")}
    assert sorted_files == {name: "unsure" if r["unsure"] else str(r["digit"]) for name, r in read.items()}

    # The person: every picture into its true digit's folder (unsure/ ends empty); one picture also under a wrong
    # digit, one twice under its own (another name, the same bytes).
    for path in list(labelled.rglob("*.png")):
        if path.parent.name != truth[path.name]:
            (labelled / truth[path.name]).mkdir(exist_ok=True)
            path.rename(labelled / truth[path.name] / path.name)
    shutil.copy(labelled / "3" / "scan-03.png", labelled / "8" / "scan-03.png")
    shutil.copy(labelled / "5" / "scan-05.png", labelled / "5" / "scan-05-again.png")
    assert not list(labelled.glob("unsure/*"))

    code, stdout, stderr = job_in_process(monkeypatch, capfd, outputs, real_data_dir, extra_data=labelled,
                                          extra_min_holdout=0, champion_check="true", champion_tolerance=1)
    report = max((read_report(p) for p in (outputs / "runs").glob("*/report.json")), key=lambda r: r.started_at)
    extra = report.extra_data
    # 30 pictures: the one under two digits is left out, the one twice under its own counts once.
    assert sum(extra.train_pictures.values()) + sum(extra.holdout_pictures.values()) == 29
    assert [sorted(conflict["labels"]) for conflict in extra.conflicts] == [[3, 8]]
    assert "scan-03.png" in stderr and extra.waiting_pictures == 0
    # Published or not, as the champion check found on today's holdout, and the report says which and why.
    assert report.published == report.champion.passed == (code == 0), stderr
    assert code in (0, 7) and (report.message is None) == (code == 0)
    latest = json.loads((outputs / "latest.json").read_text())
    assert (latest["run_id"] == report.run_id) == report.published

    read_again = predict("--json", str(outputs), str(inbox))
    assert read_again.returncode == 0, read_again.stderr
    assert json.loads(read_again.stdout)["model"].startswith(str(outputs / latest["run_dir"]))


def test_names_in_another_encoding_reach_the_report_as_printable_names(monkeypatch, capfd, outputs, real_data_dir,
                                                                        tmp_path):
    """A file named on an old PC (Latin-1 bytes, not UTF-8) in a class folder, unreadable or under two labels, ended
    the run after all its training with a PydanticSerializationError, exit 1 and no report."""
    import ast

    from conftest import job_in_process
    from job.outcome.report import read_report

    extra = tmp_path / "extra"
    for index in range(6):
        picture(extra / "7", f"{index}.png", index)
    latin = os.fsdecode(b"caf\xe9")
    (extra / "7" / f"{latin}.png").write_text("not a picture")
    picture(extra / "3", f"{latin}-3.png", 40)
    (extra / "7" / f"{latin}-7.png").write_bytes((extra / "3" / f"{latin}-3.png").read_bytes())
    code, _, stderr = job_in_process(monkeypatch, capfd, outputs, real_data_dir, extra_data=extra,
                                     extra_min_holdout=0, extra_max_bad_share=1)
    assert code == 0, stderr
    report = max((read_report(p) for p in (outputs / "runs").glob("*/report.json")), key=lambda r: r.started_at)
    [skipped] = report.extra_data.skipped
    [conflict] = report.extra_data.conflicts
    names = [skipped.path, *conflict["paths"]]
    assert {os.fsencode(ast.literal_eval(name)) for name in names} == {
        os.fsencode(extra / "7" / f"{latin}.png"), os.fsencode(extra / "3" / f"{latin}-3.png"),
        os.fsencode(extra / "7" / f"{latin}-7.png")}  # the quoted names give the bytes back



def test_a_stop_while_a_first_night_preprocesses_its_pictures_is_heard_at_the_next_picture(tmp_path):
    """SIGTERM while 1,000 new pictures were preprocessed ended the job 23 s later: the stop check (the job passes
    its StopRequest's) now runs before each picture, so nothing after it is read or cached."""
    from job.running.stop import Interrupted

    extra = tmp_path / "extra"
    for index in range(30):
        picture(extra / str(index % 10), f"{index}.png", index)
    checks = []

    def stop_at_the_fifth():
        checks.append(1)
        if len(checks) == 5:
            raise Interrupted(15)

    with pytest.raises(Interrupted):
        load_extra(extra, tmp_path / "cache", check_stop=stop_at_the_fifth)
    assert len(checks) == 5 and len(list((tmp_path / "cache").rglob("*.npy"))) == 4

@pytest.mark.parametrize("seven_folder", ["dangling link", "file"])
def test_a_class_folder_that_is_not_a_readable_folder_stops_the_run_in_one_line(tmp_path, seven_folder):
    """A class folder that is a link to a drive not mounted, or a file: its digit's pictures were dropped with
    exit 0, published, and not a word."""
    extra = tmp_path / "extra"
    picture(extra / "3", "a.png", 1)
    if seven_folder == "dangling link":
        (extra / "7").symlink_to(tmp_path / "usb-stick" / "sevens")
    else:
        (extra / "7").write_text("")
    with pytest.raises(ExtraDataError) as raised:
        load_extra(extra, tmp_path / "cache")
    expected = "does not exist (a drive not mounted?)" if seven_folder == "dangling link" else "is a file"
    assert f"class folder 7 {'is a link to ' if seven_folder == 'dangling link' else ''}" in str(raised.value)
    assert expected in str(raised.value) and "\n" not in str(raised.value)


def test_linked_sub_folders_are_followed_once_and_broken_ones_are_named(tmp_path):
    extra = tmp_path / "extra"
    elsewhere = tmp_path / "elsewhere"
    for index in range(3):
        picture(elsewhere, f"{index}.png", index)
    picture(extra / "7", "here.png", 10)
    (extra / "7" / "linked").symlink_to(elsewhere, target_is_directory=True)
    (extra / "7" / "linked" / "back-up").symlink_to(extra / "7", target_is_directory=True)  # a loop: once only
    (extra / "7" / "gone").symlink_to(tmp_path / "nowhere", target_is_directory=True)
    picture(extra / "3", "three.png", 20)
    (extra / "7" / "up").symlink_to(extra, target_is_directory=True)  # would label the 3 as a 7
    (extra / "7" / "sibling").symlink_to(extra / "3", target_is_directory=True)
    data = load_extra(extra, tmp_path / "cache", max_bad_share=0.5)
    assert len(data.train_labels) + len(data.holdout_labels) == 5  # here.png, the three linked ones, the 3
    assert sorted((os.path.basename(s.path), s.reason.split(" (")[0]) for s in data.skipped) == [
        ("gone", "not a regular file"), ("sibling", "a link to a folder outside this digit's"),
        ("up", "a link to a folder outside this digit's")]
    assert sorted(set(data.train_labels) | set(data.holdout_labels)) == [3, 7] and not data.conflicts


def test_a_digit_that_disappears_since_the_published_run_stops_the_run(monkeypatch, capfd, outputs, real_data_dir,
                                                                       tmp_path):
    from conftest import job_in_process, published_files

    extra = tmp_path / "extra"
    for index in range(8):
        picture(extra / ("3" if index % 2 else "7"), f"{index}.png", index)
    code, _, stderr = job_in_process(monkeypatch, capfd, outputs, real_data_dir, extra_data=extra,
                                     extra_min_holdout=0)
    assert code == 0, stderr
    shutil.rmtree(extra / "7")  # the sevens' folder is gone tonight
    before = published_files(outputs)
    code, stdout, stderr = job_in_process(monkeypatch, capfd, outputs, real_data_dir, extra_data=extra,
                                          extra_min_holdout=0)
    assert code == 3 and stderr.count("\n") == 1 and "Epoch" not in stdout, stderr
    assert "digit 7 had 4 pictures in the published run" in stderr and "has none now" in stderr
    assert published_files(outputs) == before
