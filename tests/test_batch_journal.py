"""Journals as batch inputs: a journal directory gives one input per stream, read as the capture
it was imported from; snapshots, checks and a user's callback over it equal those over the
original files, in this process, in local processes and on Dask."""

import json
import shutil
import tempfile
from pathlib import Path

import blake3
import numpy as np
import pytest

from ringbook.engine import batch, cli, inputs, tasks
from ringbook.engine.feeds import journal as feeds_journal
from ringbook.engine.feeds import synthetic
from ringbook.engine.journal import list_segments
from tests.test_batch import add, assert_same_states, folder_bytes, make_state, spread_and_imbalance

AMZN = "lobster/AMZN_2012-06-21_34200000_57600000_{}_1.csv"
CAPTURE = "binance/spot_btcusdt_20240808.gz"


def journal_of(files, root):
    """Import ``(format, path)`` captures into one journal at ``root`` (a stream each)."""
    for format, path in files:
        feeds_journal.import_capture(format, path, root)
    return root


def outputs(directory):
    """Snapshot files by the name they would have from the original file (a journal's are
    ``<journal>.<stream>.<symbol>...``, and the stream is the file's stem)."""
    found = {}
    for name, data in folder_bytes(directory).items():
        if name == batch.MANIFEST:
            continue
        found[name.split(".", 1)[1] if name.startswith("journal.") else name] = data
    return found


@pytest.fixture(scope="module")
def synthetic_inputs(tmp_path_factory):
    """Two synthetic LOBSTER files and a Binance capture, and a journal holding all three."""
    directory = tmp_path_factory.mktemp("files")
    files = []
    for k in range(2):
        message, _ = synthetic.write_lobster(directory, messages=1500, levels=5, seed=k, ticker=f"S{k}")
        files.append(("lobster", message))
    files.append(("binance", synthetic.write_binance_capture(directory / "capture.gz", diffs=300)))
    # The journal beside the files: its LOBSTER streams find their orderbook files there.
    return [path for _, path in files], journal_of(files, directory / "journal")


def test_a_journal_gives_an_input_per_stream_with_its_orderbook(synthetic_inputs):
    files, journal = synthetic_inputs
    assert inputs.detect_format(journal) == "journal"
    found = inputs.sources([journal])
    assert [source.stream for source in found] == sorted(feeds_journal.stream_name_of(path) for path in files)
    orderbooks = {source.stream: source.orderbook for source in found}
    for path in files[:2]:
        assert orderbooks[feeds_journal.stream_name_of(path)] == str(path).replace("_message_", "_orderbook_")
    assert orderbooks["capture"] is None
    assert len({source.key for source in found}) == 3


def test_a_folder_stands_for_its_inputs_and_journals(synthetic_inputs, tmp_path):
    """Every file of a known format under it, in name order, and each journal as one input;
    other files, hidden ones and the insides of a journal left out."""
    files, journal = synthetic_inputs
    folder = journal.parent
    others = [folder / "README.txt", folder / ".hidden_message_1.csv"]
    for path in others:
        path.write_text("not an input\n")
    try:
        found = inputs.sources([folder])
        assert found == inputs.sources(sorted(files) + [journal])
        assert [source.format for source in found].count("journal") == len(files)   # one input per stream
        # `ringbook check` takes only what it has an exchange's truth for; here that is everything.
        assert inputs.sources([folder], folder_formats=batch.CHECKED_FORMATS) == found
        assert inputs.sources([folder], folder_formats=("binance",)) == inputs.sources([files[2]])
    finally:
        for path in others:
            path.unlink()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.txt").write_text("nothing yet\n")
    with pytest.raises(ValueError, match=f"{empty}: a folder without inputs"):
        inputs.sources([empty])


@pytest.mark.slow
def test_snapshots_of_a_journal_equal_those_of_its_files(synthetic_inputs, tmp_path):
    files, journal = synthetic_inputs
    direct = batch.snapshot_files(files, tmp_path / "files", levels=5, interval="1s", workers=0)
    through = batch.snapshot_files([journal], tmp_path / "journal", levels=5, interval="1s", workers=0)
    assert direct.ok and through.ok and len(through.done) == 3
    expected = outputs(tmp_path / "files")
    assert len(expected) == 3 and outputs(tmp_path / "journal") == expected
    manifest = json.loads((tmp_path / "journal" / batch.MANIFEST).read_text())
    assert sorted(manifest["files"]) == sorted(source.key for source in inputs.sources([journal]))
    assert all(entry["status"] == "done" for entry in manifest["files"].values())
    # A stream's hash is one over its segments' bytes in order.
    for key, entry in manifest["files"].items():
        root, stream = key.split("#")
        segments = [path for _, path in list_segments(root, stream)[stream]]
        assert entry["blake3"] == blake3.blake3(b"".join(Path(path).read_bytes() for path in segments)).hexdigest()
    # A rerun skips every stream; --force redoes them.
    again = batch.snapshot_files([journal], tmp_path / "journal", levels=5, interval="1s", workers=0)
    assert len(again.skipped) == 3 and not again.done


@pytest.mark.slow
def test_callback_and_check_over_a_journal_equal_the_files(synthetic_inputs, capsys):
    files, journal = synthetic_inputs
    direct = batch.replay_files(files, spread_and_imbalance, make_state, workers=0)
    through = batch.replay_files([journal], spread_and_imbalance, make_state, workers=0)
    streams = {feeds_journal.stream_name_of(path): str(path) for path in files}
    renamed = {(streams[key.split("#")[1]], symbol): state for (key, symbol), state in through.items()}
    assert_same_states(renamed, direct)
    # Their folder: the files, then the journal's streams (name order), each once.
    in_folder = batch.replay_files([journal.parent, files[0]], spread_and_imbalance, make_state, workers=0)
    expected = {key: direct[key] for key in sorted(direct)}
    assert_same_states(in_folder, {**expected, **through})
    status = cli.main(["check", str(journal), "--workers", "0", "--json"])
    report = json.loads(capsys.readouterr().out)
    status_files = cli.main(["check", *map(str, files), "--workers", "0", "--json"])
    expected = json.loads(capsys.readouterr().out)
    assert status == status_files == 0 and report["totals"] == expected["totals"]
    assert expected["totals"]["checked"] > 3000 and expected["totals"]["mismatches"] == 0
    assert [entry["stream"] for entry in report["files"]] == sorted(streams)


def test_a_stream_not_from_a_capture_fails_alone(synthetic_inputs, tmp_path):
    files, journal = synthetic_inputs
    mixed = tmp_path / "mixed"
    shutil.copytree(journal, mixed)
    for path in files[:2]:   # the LOBSTER streams' orderbook files, beside the copy
        shutil.copy(str(path).replace("_message_", "_orderbook_"), tmp_path)
    from ringbook.engine.journal import JournalWriter

    with JournalWriter(mixed, "other") as writer:
        writer.append(b"not a capture", receive_ns=10**18)
    report = batch.snapshot_files([mixed], tmp_path / "out", levels=5, interval="1s", workers=0)
    assert len(report.done) == 3 and [key for key, _ in report.failed] == [f"{mixed}#other"]
    assert "not imported from a capture" in report.failed[0][1].error


def test_lobster_streams_without_their_orderbook_files_fail_alone(synthetic_inputs, tmp_path):
    """A journal moved away from the orderbook files: its LOBSTER streams fail, naming the journal,
    the stream and the file missing (they ran unseeded before); its Binance stream is done."""
    files, journal = synthetic_inputs
    moved = shutil.copytree(journal, tmp_path / "moved")
    report = batch.snapshot_files([moved], tmp_path / "out", levels=5, interval="1s", workers=0)
    lobster_streams = sorted(f"{moved}#{Path(path).name.rsplit('.', 1)[0]}" for path in files[:2])
    assert sorted(key for key, _ in report.failed) == lobster_streams and len(report.done) == 1
    for key, failure in report.failed:
        stream = key.split("#")[1]
        assert failure.error.startswith(f"{moved} (stream {stream}, a lobster capture): no orderbook file "
                                        f"{stream.replace('_message_', '_orderbook_')}.csv beside it")


def test_a_malformed_record_names_the_journal_stream_and_line(tmp_path, monkeypatch):
    """The shard fails naming the journal, its stream and the line; the capture written back
    to stream it from is removed (also when the shard ends early)."""
    message, _ = synthetic.write_lobster(tmp_path, messages=200, levels=5, seed=3, ticker="BAD")
    rows = Path(message).read_text().splitlines()
    rows[9] = rows[9].replace(",", ";", 1)
    Path(message).write_text("\n".join(rows) + "\n")
    journal = journal_of([("lobster", message)], tmp_path / "journal")
    tasks.prepare_worker()   # its Numba cache folder is under the temporary folder: made before it moves
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    report = batch.snapshot_files([journal], tmp_path / "out", levels=5, interval="1s", workers=0)
    (key, failure), = report.failed
    assert failure.line == 10 and str(journal) in failure.file and "stream" in failure.file
    assert list(scratch.iterdir()) == []


@pytest.mark.slow
def test_journal_same_results_in_processes_and_on_dask(synthetic_inputs, tmp_path):
    distributed = pytest.importorskip("distributed")
    files, journal = synthetic_inputs
    batch.snapshot_files([journal], tmp_path / "serial", levels=5, interval="1s", workers=0)
    expected = folder_bytes(tmp_path / "serial")
    states = batch.replay_files([journal], spread_and_imbalance, make_state, workers=0)
    batch.snapshot_files([journal], tmp_path / "processes", levels=5, interval="1s", workers=2)
    assert folder_bytes(tmp_path / "processes") == expected
    assert_same_states(batch.replay_files([journal], spread_and_imbalance, make_state, workers=2), states)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        batch.snapshot_files([journal], tmp_path / "dask", levels=5, interval="1s", cluster=client)
        total = batch.replay_files([journal], spread_and_imbalance, make_state, reduce=add, cluster=client)
    assert folder_bytes(tmp_path / "dask") == expected
    assert np.array_equal(total, sum(states.values()))


@pytest.mark.slow
def test_real_files_through_a_journal(shared_data, tmp_path):
    """The AMZN LOBSTER day and the Binance capture, journaled: the same snapshots (LOBSTER's
    the rows of its orderbook file, given among the inputs) and checks."""
    message, orderbook = (shared_data / AMZN.format(kind) for kind in ("message", "orderbook"))
    capture = shared_data / CAPTURE
    journal = journal_of([("lobster", message), ("binance", capture)], tmp_path / "journal")
    direct = batch.snapshot_files([message, capture], tmp_path / "files", levels=10, interval="1s", workers=0)
    through = batch.snapshot_files([journal, orderbook], tmp_path / "journal_out", levels=10, interval="1s",
                                   workers=2)
    assert direct.ok and through.ok
    expected = outputs(tmp_path / "files")
    assert len(expected) == 2 and outputs(tmp_path / "journal_out") == expected
    files, totals = batch.check_files([journal, orderbook], workers=0)
    expected_files, expected_totals = batch.check_files([message, capture], workers=0)
    assert totals == expected_totals and expected_totals["mismatches"] == 0
