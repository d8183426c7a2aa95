"""build_interface.py: scaffolding into a temporary copy of the project, the generated space, and every refusal.

Everything runs in subprocesses with ``cwd`` = the copy, so the copy's packages (with the scaffolded space) are
imported, never the repository's.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from scaffolding import REPO, assert_refused, copy_project, ruff_executable, run_cli, run_in, scaffold_args, snapshot

SPACE_FILES = ["__init__.py", "my_space_lookup_table.py", "my_space_model.py", "my_space_supernet.py"]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the project with MySpace scaffolded: (root, CLI result, snapshots before and after scaffolding)."""
    root = copy_project(str(tmp_path_factory.mktemp("project")))
    before = snapshot(root)
    result = run_cli(root, *scaffold_args("my_space", "MySpace"))
    return root, result, before, snapshot(root)


# ---------------------------------------------------------------- scaffolding


def test_scaffold_writes_only_the_new_package(project):
    root, result, before, after = project
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    package = os.path.join(root, "search_space", "my_space")
    assert sorted(os.listdir(package)) == SPACE_FILES
    new = {k for k in after if k not in before}
    assert new == {"search_space/my_space/"} | {f"search_space/my_space/{f}" for f in SPACE_FILES}
    assert {k: v for k, v in after.items() if k in before} == before  # no existing file edited
    assert not [f for f in os.listdir(os.path.join(root, "search_space")) if f.startswith(".")]  # no temp dir left
    for f in SPACE_FILES:
        assert os.path.join("search_space", "my_space", f) in result.stdout
        with open(os.path.join(package, f), encoding="utf-8") as fh:
            text = fh.read()
        for stub in ("TODO", "NotImplementedError", "\n        pass\n", "\n    pass\n", "{{", "}}"):
            assert stub not in text, (f, stub)


def test_printed_yaml_enables_the_space(project):
    result = project[1]
    out = result.stdout
    assert "search_space_agent: MySpace" in out
    yaml_part = out[out.index("agent:") :]
    assert yaml.safe_load(yaml_part) == {"agent": {"search_space_agent": "MySpace"}, "search_space": {}}


def test_generated_space_runs_and_counts_match(project):
    root = project[0]
    res = run_in(
        root,
        """
        import json
        import nnabla as nn
        import nnabla.functions as F
        import numpy as np
        from core.registries import SEARCH_SPACES
        from core.typed import from_dict, to_plain
        from hardware.counter import count_module
        from search_space.choices import SearchSpaceChoices, decode_arch, encode_arch
        from search_space.spec import DataInfo

        space = SEARCH_SPACES.get("MySpace")
        params = from_dict(space.Params, {}, "search_space")  # an empty YAML section
        out = {"params_roundtrip": from_dict(space.Params, to_plain(params), "search_space") == params, "cases": []}
        rng = np.random.default_rng(0)
        for data in (DataInfo(10, 1, 8), DataInfo(10, 3, 16), DataInfo(10, 3, 32)):
            case = {"data": list(data.__dict__.values())}
            net = space.build_supernet(params, data)
            choices = net.choices()
            arch = choices.sample(rng)
            net.set_active(arch)
            x = nn.Variable.from_numpy_array(rng.standard_normal((4, data.in_channels, data.input_size,
                                                                  data.input_size)).astype(np.float32))
            y = net(x)
            loss = F.mean(y ** 2)
            loss.forward()
            loss.backward()
            case["shape"] = list(y.shape)
            case["finite"] = bool(np.isfinite(y.d).all())
            case["active"] = net.active_arch() == arch
            case["labels"] = choices.labels
            case["n_choices"] = [len(choices[k]) for k in choices]
            case["choices_roundtrip"] = SearchSpaceChoices.from_dict(choices.to_dict()) == choices
            case["arch_roundtrip"] = (choices.validate(decode_arch(encode_arch(arch))) == arch
                                      and choices.from_indices(choices.to_indices(arch)) == arch)
            case["strides"] = [layer.stride for layer in net.macro_cfg.search]
            lut = space.build_lookup_table(params, data)
            case["counts"] = []
            for _ in range(3):
                a = choices.sample(rng)
                model = space.build_model(params, data, a)
                counted = count_module(model, (data.in_channels, data.input_size, data.input_size))
                summed = sum(v.size for v in model.get_parameters(grad_only=True).values())
                case["counts"].append([lut.predict(a, "flops"), counted["flops"],
                                       lut.predict(a, "params"), counted["params"], summed])
            out["cases"].append(case)
        custom = from_dict(space.Params, {"layers": [[16, 2], [16, 1]], "candidates": [[6, 5]], "skip": False},
                           "search_space")
        net = space.build_supernet(custom, DataInfo(3, 1, 8))
        out["custom_choices"] = net.choices().to_dict()
        print(json.dumps(out))
        """,
    )
    assert res["params_roundtrip"]
    for case in res["cases"]:
        assert case["shape"] == [4, 10], case
        assert case["finite"] and case["active"], case
        assert case["choices_roundtrip"] and case["arch_roundtrip"], case
        assert 3 <= len(case["labels"]) <= 4
        assert all(1 < n <= 5 for n in case["n_choices"]), case  # a real decision at every layer, few candidates
        for flops_pred, flops, params_pred, params, summed in case["counts"]:
            assert flops > 0 and params > 0
            assert flops_pred == flops and params_pred == params == summed, case
    # stride 2 only while the feature map stays >= 4: one reduction at 8x8, two at 16x16 and 32x32
    assert [c["strides"].count(2) for c in res["cases"]] == [1, 2, 2]
    assert res["custom_choices"] == {"layer_0": ["MB6_K5"], "layer_1": ["MB6_K5"]}


def test_generated_code_passes_ruff(project):
    ruff = ruff_executable()
    if ruff is None:
        pytest.skip("ruff is not installed")
    root = project[0]
    # the shortest and longest allowed names, and names sorting before/after the library's own modules
    extremes = [("a", "A"), ("zzz_space", "Zz"), ("n" * 30, "C" * 30)]
    for name, cls in extremes:
        result = run_cli(root, *scaffold_args(name, cls))
        assert result.returncode == 0, result.stderr
    dirs = [os.path.join(root, "search_space", n) for n in ["my_space"] + [n for n, _ in extremes]]
    config = os.path.join(REPO, "pyproject.toml")
    check = subprocess.run([ruff, "check", "--no-cache", "--config", config, *dirs], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    fmt = subprocess.run(
        [ruff, "format", "--check", "--no-cache", "--config", config, *dirs], capture_output=True, text=True
    )
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "args, expected",
    [
        (scaffold_args("My-Space", "MySpace2"), "lowercase Python identifier"),
        (scaffold_args("MySpace", "MySpace2"), "lowercase Python identifier"),
        (scaffold_args("1space", "MySpace2"), "lowercase Python identifier"),
        (scaffold_args("_private", "MySpace2"), "lowercase Python identifier"),
        (scaffold_args("class", "MySpace2"), "keyword"),
        (scaffold_args("spec", "MySpace2"), "clashes with search_space/spec.py"),
        (scaffold_args("my_space", "OtherSpace"), "search_space/my_space already exists"),
        (scaffold_args("proxylessnas", "OtherSpace"), "search_space/proxylessnas already exists"),
        (scaffold_args("blocks", "OtherSpace"), "search_space/blocks already exists"),
        (scaffold_args("other_space", "my_space"), "CapWords"),
        (scaffold_args("other_space", "My_Space"), "CapWords"),
        (scaffold_args("other_space", "None"), "keyword"),
        (scaffold_args("other_space", "C" * 31), "longer than 30"),
        (scaffold_args("other_space", "MySpace"), "'MySpace' is already registered"),
        (scaffold_args("other_space", "ProxylessNAS"), "'ProxylessNAS' is already registered"),
        (scaffold_args("other_space", "Base"), "bind 'Base"),
        (scaffold_args("other_space", "OtherSpace", kind="search_spaces"), "(did you mean search_space?)"),
        (["-t", "search_space", "--customize-name", "other_space"], "required"),
    ],
)
def test_refusals_exit_2_with_one_line_and_write_nothing(project, args, expected):
    assert assert_refused(project[0], args, expected).stdout == ""


def test_unknown_kind_lists_valid_kinds(project):
    result = run_cli(project[0], *scaffold_args("x", "X", kind="nope"))
    assert result.returncode == 2
    valid = "agent, criterion, dataset, search_space, search_strategy, training_strategy"
    assert result.stderr.strip() == f"build_interface.py: error: unknown kind 'nope'; valid: {valid}"


def test_help_documents_every_option(project):
    result = run_cli(project[0], "--help")
    assert result.returncode == 0
    for word in ("--type", "--customize-name", "--customize-class", "--root", "search_space", "config.yaml.j2"):
        assert word in result.stdout


# ---------------------------------------------------------------- templates as data


def test_failing_render_leaves_nothing_behind(tmp_path):
    root = copy_project(str(tmp_path / "project"))
    with open(os.path.join(root, "templates", "search_space", "macro", "zz_broken.py.j2"), "w", encoding="utf-8") as f:
        f.write('"""Broken."""\nvalue = {{ no_such_variable }}\n')
    before = snapshot(root)
    result = run_cli(root, *scaffold_args("my_space", "MySpace"))
    assert result.returncode == 2
    assert "no_such_variable" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert snapshot(root) == before

    with open(os.path.join(root, "templates", "search_space", "macro", "zz_broken.py.j2"), "w", encoding="utf-8") as f:
        f.write("def broken(:\n")
    before = snapshot(root)
    result = run_cli(root, *scaffold_args("my_space", "MySpace"))
    assert result.returncode == 2 and "renders invalid Python" in result.stderr
    assert snapshot(root) == before


def test_a_new_template_folder_is_a_new_kind(tmp_path):
    root = copy_project(str(tmp_path / "project"))
    shutil.rmtree(os.path.join(root, "criterion"))  # an empty criterion package: independent of the shipped losses
    os.makedirs(os.path.join(root, "criterion"))
    open(os.path.join(root, "criterion", "__init__.py"), "w").close()
    kind_dir = os.path.join(root, "templates", "criterion")
    shutil.rmtree(kind_dir)  # a kind folder without kind.yaml: a package named like it, registered by class
    os.makedirs(kind_dir)
    with open(os.path.join(kind_dir, "__init__.py.j2"), "w", encoding="utf-8") as f:
        f.write('"""{{ customize_class }}."""\n\nfrom .{{ customize_name }}_loss import {{ customize_class }}\n')
    with open(os.path.join(kind_dir, "loss.py.j2"), "w", encoding="utf-8") as f:
        f.write(
            '"""{{ customize_class }}."""\n\nfrom core.registries import CRITERIA\n\n\n'
            '@CRITERIA.register("{{ customize_class }}")\nclass {{ customize_class }}:\n'
            '    """A loss."""\n'
        )
    assert "criterion" in run_cli(root, "--help").stdout
    result = run_cli(root, *scaffold_args("my_loss", "MyLoss", kind="criterion"))
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(os.path.join(root, "criterion", "my_loss"))) == ["__init__.py", "my_loss_loss.py"]
    # the registry found it by itself: the same class name is now refused
    again = run_cli(root, *scaffold_args("my_loss2", "MyLoss", kind="criterion"))
    assert again.returncode == 2 and "'MyLoss' is already registered" in again.stderr


# ---------------------------------------------------------------- end to end


@pytest.mark.slow
def test_generated_space_runs_a_short_real_search(project):
    """The scaffolded space, unedited, goes through supernet training, search and retraining via main.py."""
    root = project[0]
    shutil.copy2(os.path.join(REPO, "main.py"), root)
    config = {
        "agent": {"main_agent": "search", "search_space_agent": "MySpace", "search_strategy_agent": "random"},
        "search_space": {},
        "search_strategy": {"samples": 4},
        "train": {"epochs": 1, "max_steps_per_epoch": 3},
        "retrain": {"epochs": 1, "max_steps_per_epoch": 3},
        "search": {"valid_batches": 1},
    }
    with open(os.path.join(root, "my_space.yml"), "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f)
    runs = os.path.join(root, "runs")
    proc = subprocess.run(
        [sys.executable, "-B", "main.py", "-c", "my_space.yml", "--title", "e2e", "--output-dir", runs, "--quiet"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(os.path.join(runs, "e2e", "searched_arch.json"), encoding="utf-8") as f:
        searched = json.load(f)
    arch = searched["arch"]
    assert sorted(arch) == ["layer_0", "layer_1", "layer_2", "layer_3"]
