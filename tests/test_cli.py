"""The CLI contract used by outside checks: flags, JSON keys, exit codes, no tracebacks."""

import json

import pytest
from typer.testing import CliRunner

from prototok.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, list(args))


def test_encode_then_decode_prints_the_exact_text(tmp_path):
    out = tmp_path / "e.safetensors"
    text = "Exactly this, with  two spaces."
    res = run("encode", text, "--out", str(out), "--model", "tiny-llama", "--max-steps", "5", "--seeds", "2", "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    for key in ("accuracy", "c_tokens", "n_tokens", "h_lm", "steps", "seconds", "corrections"):
        assert key in summary
    assert summary["c_tokens"] + summary["corrections"] == summary["n_tokens"]
    res = run("decode", str(out))
    assert res.exit_code == 0 and res.stdout == text
    res = run("decode", str(out), "--json")
    assert json.loads(res.stdout)["text"] == text and "decode_seconds" in json.loads(res.stdout)


def test_paper_recipe_and_sink_flag(tmp_path):
    from prototok import Encoding

    for flags, sink in ((["--recipe", "paper"], False), (["--no-sink"], False), ([], True)):
        out = tmp_path / f"{sink}{len(flags)}.safetensors"
        res = run("encode", "sink or not", "--out", str(out), "--model", "tiny-llama", "--max-steps", "2", *flags)
        assert res.exit_code == 0, res.output
        assert Encoding.load(out).sink is sink and run("decode", str(out)).stdout == "sink or not"


def test_margin_flag_decides_when_a_text_counts_as_solved(tmp_path):
    """Margin 0 stops at the first exact reconstruction; an unreachable margin spends the budget."""
    steps = {}
    for margin in ("0", "50"):
        out = tmp_path / f"m{margin}.safetensors"
        res = run("encode", "hi", "--out", str(out), "--model", "tiny-llama", "--max-steps", "60", "--seeds", "1",
                  "--margin", margin, "--json")
        assert res.exit_code == 0, res.output
        steps[margin] = json.loads(res.stdout)["steps"]
        assert run("decode", str(out)).stdout == "hi"
    assert steps["0"] < 60 and steps["50"] == 60, steps


def test_chunk_tokens_default_is_the_library_one_and_the_flag_overrides_it(tmp_path):
    """The CLI leaves the chunk length to EncodeConfig (one default for CLI, API and library)."""
    from prototok import EncodeConfig, Encoding
    from prototok.recipe import CHUNK_TOKENS

    assert EncodeConfig().chunk_tokens == CHUNK_TOKENS
    text = " ".join(["word"] * (CHUNK_TOKENS + 5))
    for flags, size in (([], CHUNK_TOKENS), (["--chunk-tokens", "8"], 8)):
        out = tmp_path / f"c{size}.safetensors"
        res = run("encode", text, "--out", str(out), "--model", "tiny-llama", "--max-steps", "2", *flags)
        assert res.exit_code == 0, res.output
        enc = Encoding.load(out)
        assert max(enc.lengths) == size and sum(enc.lengths) == enc.n_tokens > size
        assert run("decode", str(out)).stdout == text


def test_encode_from_file(tmp_path):
    src, out = tmp_path / "t.txt", tmp_path / "e.safetensors"
    src.write_text("from a file\n", encoding="utf-8")
    assert run("encode", "--file", str(src), "--out", str(out), "--model", "tiny-llama", "--max-steps", "2").exit_code == 0
    assert run("decode", str(out)).stdout == "from a file\n"


def texts_in(folder, texts):
    folder.mkdir()
    paths = []
    for i, text in enumerate(texts):
        paths.append(folder / f"t{i}.txt")
        paths[-1].write_text(text, encoding="utf-8")
    return paths


def test_several_files_encode_in_batches_into_a_folder_and_each_decodes_to_its_own_text(tmp_path):
    texts = ["first of four", "the second text", "third", "and a fourth, longer than the others"]
    files = texts_in(tmp_path / "in", texts)
    out = tmp_path / "out"
    flags = ["--out-dir", str(out), "--batch", "3", "--model", "tiny-llama", "--max-steps", "3", "--json"]
    res = run("encode", *[a for f in files for a in ("--file", str(f))], *flags)
    assert res.exit_code == 0, res.output
    assert "encode: batch 1/2, 3 texts" in res.stderr and "encode: batch 2/2, 1 text\n" in res.stderr
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert [line["out"] for line in lines] == [str(out / f"t{i}.safetensors") for i in range(4)]
    for i, text in enumerate(texts):
        assert run("decode", str(out / f"t{i}.safetensors")).stdout == text
    from prototok import Encoding

    assert Encoding.load(out / "t0.safetensors").n_tokens != Encoding.load(out / "t3.safetensors").n_tokens


def test_skip_existing_resumes_and_leaves_done_files_untouched(tmp_path):
    files = texts_in(tmp_path / "in", ["one", "two", "three"])
    out = tmp_path / "out"
    first = run("encode", "--file", str(files[0]), "--out-dir", str(out), "--model", "tiny-llama", "--max-steps", "2")
    assert first.exit_code == 0, first.output
    done = (out / "t0.safetensors").read_bytes()
    res = run("encode", *[a for f in files for a in ("--file", str(f))], "--out-dir", str(out), "--skip-existing",
              "--model", "tiny-llama", "--max-steps", "2", "--json")
    assert res.exit_code == 0, res.output
    assert "1 of 3 outputs exist already" in res.stderr
    assert [json.loads(line)["out"] for line in res.stdout.splitlines()] == [str(out / "t1.safetensors"),
                                                                           str(out / "t2.safetensors")]
    assert (out / "t0.safetensors").read_bytes() == done
    assert run("decode", str(out / "t2.safetensors")).stdout == "three"


@pytest.mark.parametrize("case, message", [
    ("two files, --out", "need --out-dir"),
    ("text and --out-dir", "not TEXT"),
    ("--out and --out-dir", "not both"),
    ("same stem", "share a file name stem"),
    ("an empty file", "b.txt is empty"),
    ("no output", "give --out"),
])
def test_bad_batch_arguments_exit_2_before_any_model_loads(tmp_path, case, message):
    (tmp_path / "a.txt").write_text("a", encoding="utf-8")
    (tmp_path / "b.txt").write_text("", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("other a", encoding="utf-8")
    a, b, sub_a, out = (str(tmp_path / n) for n in ("a.txt", "b.txt", "sub/a.txt", "out"))
    args = {"two files, --out": ["--file", a, "--file", sub_a, "--out", f"{out}.safetensors"],
            "text and --out-dir": ["hello", "--out-dir", out],
            "--out and --out-dir": ["--file", a, "--out", f"{out}.safetensors", "--out-dir", out],
            "same stem": ["--file", a, "--file", sub_a, "--out-dir", out],
            "an empty file": ["--file", a, "--file", b, "--out-dir", out],
            "no output": ["hello"]}[case]
    res = run("encode", *args, "--model", str(tmp_path / "no-such-model"))  # a load would fail differently
    assert res.exit_code == 2, res.output
    assert message in res.stderr and res.stderr.count("\n") == 1, res.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("encode", "", "--out", "{tmp}/x.safetensors", "--model", "tiny-llama"),
        ("encode", "--file", "{tmp}/absent.txt", "--out", "{tmp}/x.safetensors"),
        ("encode", "hi", "--out", "{tmp}/x.safetensors", "--model", "{tmp}/no-such-model"),
        ("encode", "hi", "--out", "{tmp}/x.safetensors", "--model", "tiny-llama", "--recipe", "nope"),
        ("decode", "{tmp}/absent.safetensors"),
        ("decode", "{tmp}/corrupt.safetensors"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, args):
    (tmp_path / "corrupt.safetensors").write_bytes(b"not a file format")
    res = run(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert res.exit_code == 2
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1
    assert "Traceback" not in res.output


def test_wrong_model_for_a_file_exits_2(tmp_path):
    out = tmp_path / "e.safetensors"
    run("encode", "hi", "--out", str(out), "--model", "tiny-llama", "--max-steps", "1")
    res = run("decode", str(out), "--model", "tiny-gpt-neox")
    assert res.exit_code == 2 and "refusing" in res.stderr


def test_a_missing_optional_package_names_the_extra_that_brings_it():
    from prototok.cli import _missing_extra

    assert _missing_extra(ModuleNotFoundError("No module named 'redis'", name="redis")) == (
        "this command needs the package 'redis', which is not installed: pip install 'prototok[worker]'")
    assert "prototok[experiments]" in _missing_extra(ModuleNotFoundError(name="matplotlib.pyplot"))
    assert _missing_extra(ModuleNotFoundError(name="nosuch")).endswith("'nosuch', which is not installed")


def test_the_cli_loads_no_experiment_libraries_until_an_experiment_runs():
    import subprocess
    import sys

    code = "import sys, prototok.cli; print(any(m in sys.modules for m in ('matplotlib', 'sklearn')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
