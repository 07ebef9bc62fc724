"""SGLang conformance on CPU: everything roll/strategies/sglang_engine.py calls exists in the supported
sglang release with a compatible signature, checked on that release's source with `ast` (sglang
itself cannot be imported without its GPU kernels).

The wheel is downloaded once with `pip download sglang==<version> --no-deps` and its .py files are
cached under ~/.cache/roll/sglang-src/<version> (ROLL_CACHE_DIR overrides ~/.cache/roll); the tests
that need it skip with pip's reason when it cannot be fetched (offline). ROLL_SGLANG_VERSION checks
another release against the same SGLANG_API table (the shipped ServerArgs names stay tied to
SGLANG_VERSION).

The pure helpers (output dict -> GeneratedSample, finish reasons, sampling params, engine keywords)
are tested on dicts shaped as SGLang 0.5.23 builds them; each test names the producing function.
"""

import ast
import contextlib
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from roll.config.worker import StrategyConfig, WorkerConfig
from roll.strategies import sglang_engine as se
from roll.strategies.engine import GenerationRequest, SamplingParams, validate_requests
from roll.strategies.sglang_server_args import (
    MANAGED_ARGS,
    SERVER_ARG_NAMES,
    SGLANG_VERSION,
    check_sglang_args,
    parse_server_arg_names,
    parse_sglang_version,
    render_generated_block,
)

VERSION = os.environ.get("ROLL_SGLANG_VERSION", SGLANG_VERSION)


# ---------------------------------------------------------------------------------------------
# The sglang source of VERSION, downloaded once and cached.
# ---------------------------------------------------------------------------------------------


def _download_source(version: str, dest: Path) -> None:
    """Unpack the runtime's .py files (sglang/*.py, sglang/srt/**.py) and METADATA of the sglang `version` wheel."""
    with_tmp = dest.with_name(f"{dest.name}.tmp{os.getpid()}")
    shutil.rmtree(with_tmp, ignore_errors=True)
    wheels = with_tmp / "wheel"
    cmd = [
        *(sys.executable, "-m", "pip", "download", f"sglang=={version}", "--no-deps", "-d", str(wheels)),
        *("--only-binary=:all:", "--implementation", "cp", "--python-version", "3.11"),
        *("--platform", "manylinux_2_34_x86_64", "--platform", "manylinux_2_28_x86_64", "--platform", "any"),
        *("--disable-pip-version-check", "--quiet"),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        shutil.rmtree(with_tmp, ignore_errors=True)
        pytest.skip(f"pip download sglang=={version} timed out (offline?)")
    found = sorted(wheels.glob("sglang-*.whl")) if proc.returncode == 0 else []
    if not found:
        shutil.rmtree(with_tmp, ignore_errors=True)
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        tail = [line for line in lines if not line.startswith("WARNING")][-2:]
        pytest.skip(f"cannot download the sglang=={version} wheel (offline?): {' | '.join(tail)}")
    src = with_tmp / "src"
    with zipfile.ZipFile(found[0]) as wheel:
        for name in wheel.namelist():
            top_level = name.startswith("sglang/") and name.count("/") == 1
            runtime = name.startswith("sglang/srt/")
            if ((top_level or runtime) and name.endswith(".py")) or name.endswith(".dist-info/METADATA"):
                wheel.extract(name, src)
    shutil.rmtree(wheels)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):  # a concurrent run put it there first
        os.replace(src, dest)
    shutil.rmtree(with_tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def sglang_src() -> Path:
    cache = Path(os.environ.get("ROLL_CACHE_DIR", Path.home() / ".cache" / "roll")) / "sglang-src" / VERSION
    if not (cache / "sglang" / "srt" / "server_args.py").is_file():
        _download_source(VERSION, cache)
    return cache


# ---------------------------------------------------------------------------------------------
# A small resolver over the source: modules, top-level names (through imports), class members.
# ---------------------------------------------------------------------------------------------


@dataclass
class Found:
    module: str
    node: ast.AST


class Source:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._trees: dict[str, ast.Module | None] = {}

    def path(self, module: str) -> Path | None:
        base = self.root.joinpath(*module.split("."))
        for path in (base.with_suffix(".py"), base / "__init__.py"):
            if path.is_file():
                return path
        return None

    def tree(self, module: str) -> ast.Module | None:
        if module not in self._trees:
            path = self.path(module)
            self._trees[module] = None if path is None else ast.parse(path.read_text(encoding="utf-8"))
        return self._trees[module]

    def _absolute(self, module: str, node: ast.ImportFrom) -> str:
        if node.level == 0:
            return node.module or ""
        package = module if self.path(module).name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        return f"{package}.{node.module}" if node.module else package

    def find(self, module: str, name: str, depth: int = 0) -> Found | None:
        """The def/class `name` defined in `module` or imported into it from another sglang module."""
        tree = self.tree(module)
        if tree is None or depth > 20:
            return None
        for node in tree.body:
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
                return Found(module, node)
        for node in tree.body:
            if isinstance(node, ast.ImportFrom):
                source = self._absolute(module, node)
                for alias in node.names:
                    if (alias.asname or alias.name) == name or alias.name == "*":
                        found = self.find(source, alias.name if alias.name != "*" else name, depth + 1)
                        if found is not None:
                            return found
        return None

    def bases(self, cls: Found) -> list[Found]:
        out = []
        for base in cls.node.bases:
            if isinstance(base, ast.Name):
                found = self.find(cls.module, base.id)
                if found is not None and isinstance(found.node, ast.ClassDef):
                    out.append(found)
        return out

    def member(self, cls: Found, name: str) -> Found | None:
        """Method `name` of class `cls` or of its in-package bases (method resolution order, roughly)."""
        for node in cls.node.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
                return Found(cls.module, node)
        for base in self.bases(cls):
            found = self.member(base, name)
            if found is not None:
                return found
        return None

    def assigns_attribute(self, cls: Found, name: str) -> bool:
        """Whether the class declares `name` or some method assigns `self.name`."""
        for node in ast.walk(cls.node):
            if isinstance(node, ast.AnnAssign | ast.Assign):
                targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
                for t in targets:
                    if isinstance(t, ast.Name) and t.id == name:
                        return True
                    if isinstance(t, ast.Attribute) and t.attr == name and ast.unparse(t.value) == "self":
                        return True
        return any(self.assigns_attribute(base, name) for base in self.bases(cls))

    def fields(self, cls: Found) -> tuple[set[str], set[str]]:
        """(all fields, fields without a default) of a dataclass / msgspec.Struct, bases included."""
        names: set[str] = set()
        required: set[str] = set()
        for base in self.bases(cls):
            base_names, base_required = self.fields(base)
            names |= base_names
            required |= base_required
        for node in cls.node.body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                if "ClassVar" in ast.unparse(node.annotation):
                    continue
                names.add(node.target.id)
                if node.value is None:
                    required.add(node.target.id)
                else:
                    required.discard(node.target.id)
        return names, required


def _resolve(src: Source, key: str) -> Found | None:
    module, _, qualname = key.partition(":")
    parts = qualname.split(".")
    found = src.find(module, parts[0])
    for part in parts[1:]:
        if found is None or not isinstance(found.node, ast.ClassDef):
            return None
        found = src.member(found, part)
    return found


def _is_staticmethod(node: ast.AST) -> bool:
    return any(
        isinstance(d, ast.Name) and d.id == "staticmethod" for d in getattr(node, "decorator_list", [])
    )


def api_problems(src: Source, api: dict[str, tuple[str, ...]], awaited: frozenset[str]) -> list[str]:
    """Every way `api` (key -> keywords we pass) is incompatible with the source; empty when it conforms."""
    problems = []
    for key, keywords in api.items():
        module, _, qualname = key.partition(":")
        owner_key, _, attr = key.rpartition(".")
        found = _resolve(src, key)
        if found is None and ":" in owner_key:
            owner = _resolve(src, owner_key)
            if (
                owner is not None
                and isinstance(owner.node, ast.ClassDef)
                and src.assigns_attribute(owner, attr)
            ):
                if keywords:
                    problems.append(f"{key}: an attribute, but SGLANG_API lists keywords {keywords}")
                continue
        if found is None:
            problems.append(f"{key}: not found in sglang {VERSION}")
            continue
        node = found.node
        if isinstance(node, ast.ClassDef):
            init = src.member(found, "__init__")
            if init is None:
                names, required = src.fields(found)
                missing = sorted(set(keywords) - names)
                if missing:
                    problems.append(f"{key}: no fields {missing} (has {len(names)} fields)")
                if required - set(keywords):
                    problems.append(
                        f"{key}: required fields {sorted(required - set(keywords))} are not passed"
                    )
                continue
            node = init.node
        assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        if key in awaited and not isinstance(node, ast.AsyncFunctionDef):
            problems.append(f"{key}: we await it but it is not `async def`")
        if key not in awaited and isinstance(node, ast.AsyncFunctionDef):
            problems.append(f"{key}: `async def` but we call it without awaiting")
        args = node.args
        positional = args.args if _is_staticmethod(node) else args.args[1:]  # drop self
        accepted = {a.arg for a in positional + args.kwonlyargs}
        if args.kwarg is None:
            missing = sorted(set(keywords) - accepted)
            if missing:
                problems.append(f"{key}: does not accept keywords {missing} (accepts {sorted(accepted)})")
        no_default = positional[: len(positional) - len(args.defaults)]
        required = {a.arg for a in no_default} | {
            a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is None
        }
        if required - set(keywords):
            problems.append(f"{key}: required parameters {sorted(required - set(keywords))} are not passed")
        if len(args.posonlyargs) > (0 if _is_staticmethod(node) else 1):
            problems.append(f"{key}: positional-only parameters {[a.arg for a in args.posonlyargs]}")
    return problems


@pytest.fixture(scope="module")
def src(sglang_src) -> Source:
    return Source(sglang_src)


# ---------------------------------------------------------------------------------------------
# Conformance against the wheel.
# ---------------------------------------------------------------------------------------------


def test_every_sglang_call_exists_with_a_compatible_signature(src):
    assert api_problems(src, se.SGLANG_API, se.SGLANG_AWAITED) == []


def test_the_checker_catches_a_missing_keyword_method_and_async_mismatch(src):
    broken = {
        se.GENERATE: ("input_ids", "no_such_keyword"),
        f"{se.ENGINE_INIT.partition(':')[0]}:Engine.no_such_method": (),
        se.ABORT_REQUEST: ("rid",),
        se.UPDATE_FROM_TENSOR_REQ: ("serialized_named_tensors", "no_such_field"),
        se.INIT_UPDATE_GROUP_REQ: ("master_address",),  # master_port etc. are required
    }
    problems = "\n".join(api_problems(src, broken, frozenset({se.ABORT_REQUEST})))
    assert "no_such_keyword" in problems
    assert "no_such_method" in problems
    assert "abort_request: we await it" in problems
    assert "no_such_field" in problems
    assert "master_port" in problems


def test_engine_forwards_its_keywords_to_server_args_and_ours_are_fields(src):
    init = _resolve(src, se.ENGINE_INIT)
    assert init is not None and init.node.args.kwarg is not None, "Engine.__init__ no longer takes **kwargs"
    forwards = [
        call
        for call in ast.walk(init.node)
        if isinstance(call, ast.Call)
        and ast.unparse(call.func) in ("self.server_args_class", "ServerArgs")
        and any(k.arg is None and ast.unparse(k.value) == "kwargs" for k in call.keywords)
    ]
    assert forwards, "Engine.__init__ no longer builds ServerArgs(**kwargs)"
    names = set(parse_server_arg_names(src.root))
    assert set(se.SGLANG_API[se.ENGINE_INIT]) <= names
    assert set(MANAGED_ARGS) <= names


def test_shipped_server_arg_names_equal_the_wheels(src):
    if VERSION != SGLANG_VERSION:
        pytest.skip(f"ROLL_SGLANG_VERSION={VERSION}: the shipped names are for {SGLANG_VERSION}")
    assert parse_sglang_version(src.root) == SGLANG_VERSION
    parsed = parse_server_arg_names(src.root)
    assert parsed == SERVER_ARG_NAMES, (
        f"regenerate: python -m roll.strategies.sglang_server_args --from-source {src.root} --write; "
        f"added {sorted(set(parsed) - set(SERVER_ARG_NAMES))[:10]}, "
        f"removed {sorted(set(SERVER_ARG_NAMES) - set(parsed))[:10]}"
    )


def test_output_keys_we_read_are_produced_by_the_tokenizer_manager(src):
    tree = src.tree("sglang.srt.managers.tokenizer_manager")
    constants = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert set(se.SGLANG_OUTPUT_KEYS) <= constants


def test_finish_reason_types_are_exactly_the_ones_we_map(src):
    tree = src.tree("sglang.srt.managers.schedule_batch")
    types = set()
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        to_json = next((m for m in cls.body if isinstance(m, ast.FunctionDef) and m.name == "to_json"), None)
        for node in ast.walk(to_json) if to_json else ():
            if isinstance(node, ast.Dict):
                for k, v in zip(node.keys, node.values):
                    if isinstance(k, ast.Constant) and k.value == "type" and isinstance(v, ast.Constant):
                        types.add(v.value)
    assert types == set(se.FINISH_REASONS)


def test_sampler_still_returns_the_log_probs_the_docstring_describes(src):
    """The module docstring's log-prob claim rests on these lines of Sampler.forward; re-verify if they move."""
    sampler = _resolve(src, "sglang.srt.layers.sampler:Sampler.forward")
    assert sampler is not None
    code = ast.unparse(sampler.node)
    assert "logits.div_(sampling_info.temperatures)" in code
    assert "torch.log(probs)" in code
    assert "SGLANG_RETURN_ORIGINAL_LOGPROB" in code
    # temperature 0 = greedy: SamplingParams sets temperature 1 and top_k 1 (__post_init__ of the
    # msgspec Struct in 0.5.23, __init__ in older releases).
    cls = _resolve(src, "sglang.srt.sampling.sampling_params:SamplingParams")
    init = src.member(cls, "__post_init__") or src.member(cls, "__init__")
    body = ast.unparse(init.node)
    assert "self.top_k = 1" in body and "self.temperature = 1.0" in body


# ---------------------------------------------------------------------------------------------
# Server-argument validation (no wheel needed).
# ---------------------------------------------------------------------------------------------


def test_shipped_names_are_sorted_unique_and_cover_what_we_set():
    assert list(SERVER_ARG_NAMES) == sorted(set(SERVER_ARG_NAMES))
    assert set(se.SGLANG_API[se.ENGINE_INIT]) <= set(SERVER_ARG_NAMES)
    assert {"mem_fraction_static", "enable_memory_saver", "attention_backend"} <= set(SERVER_ARG_NAMES)


def test_check_sglang_args_suggests_the_close_name():
    with pytest.raises(ValueError) as err:
        check_sglang_args({"mem_fracton_static": 0.8})
    message = str(err.value)
    assert "\n" not in message
    assert "did you mean 'mem_fraction_static'?" in message
    assert "'mem_fracton_static'" in message


def test_check_sglang_args_rejects_keys_the_engine_sets_and_accepts_real_ones():
    check_sglang_args(
        {"mem_fraction_static": 0.7, "enable_memory_saver": True, "attention_backend": "triton"}
    )
    with pytest.raises(
        ValueError, match="tp_size must not be set here: it comes from actor_infer.tensor_parallel"
    ):
        check_sglang_args({"tp_size": 2})


def test_render_generated_block_round_trips_the_shipped_data():
    namespace: dict = {}
    exec(render_generated_block(SGLANG_VERSION, SERVER_ARG_NAMES), namespace)
    assert namespace["SERVER_ARG_NAMES"] == SERVER_ARG_NAMES
    assert namespace["SGLANG_VERSION"] == SGLANG_VERSION


# ---------------------------------------------------------------------------------------------
# Pure helpers on dicts shaped as sglang 0.5.23 produces them.
# ---------------------------------------------------------------------------------------------


def _output(ids, finish_reason, logprobs=None, rid="r:0:abc"):
    """As TokenizerManager._handle_batch_output builds it for BatchTokenIDOutput (skip_tokenizer_init),
    with output_token_logprobs from detokenize_logprob_tokens: (logprob, token_id, None) tuples."""
    meta = {"id": rid, "finish_reason": finish_reason, "prompt_tokens": 3, "completion_tokens": len(ids)}
    if logprobs is not None:
        meta["output_token_logprobs"] = [(lp, t, None) for lp, t in zip(logprobs, ids)]
        meta["output_token_logprobs_length"] = len(ids)
    return {"output_ids": list(ids), "meta_info": meta}


def test_finish_reasons_from_schedule_batch_to_json():
    assert se.finish_reason_from_sglang({"type": "stop", "matched": 7}) == "stop"  # FINISH_MATCHED_TOKEN
    assert se.finish_reason_from_sglang({"type": "length", "length": 16}) == "length"  # FINISH_LENGTH
    abort = {"type": "abort", "message": "Aborted", "status_code": None, "err_type": None}  # FINISH_ABORT
    assert se.finish_reason_from_sglang(abort) == "abort"
    # TokenizerManager._handle_abort_req, for a request aborted while queued.
    assert se.finish_reason_from_sglang({"type": "abort", "message": "Abort in waiting queue"}) == "abort"
    # Req._check_vocab_boundary_finish: FINISH_MATCHED_STR("NaN happened").
    assert se.finish_reason_from_sglang({"type": "stop", "matched": "NaN happened"}) == "abort"
    with pytest.raises(ValueError, match="unexpected sglang finish_reason None"):
        se.finish_reason_from_sglang(None)


def test_sample_keeps_the_stop_token_and_its_log_prob():
    out = _output([5, 9, 2], {"type": "stop", "matched": 2}, logprobs=[-0.5, -1.25, -0.125])
    sample = se.sample_from_sglang_output(out, return_logprobs=True)
    assert sample.token_ids == [5, 9, 2]
    assert sample.logprobs == [-0.5, -1.25, -0.125]
    assert sample.finish_reason == "stop"
    bare = se.sample_from_sglang_output(out, return_logprobs=False)
    assert bare.logprobs == [] and bare.token_ids == [5, 9, 2]


def test_misaligned_log_probs_raise_unless_aborted():
    out = _output([5, 9, 2], {"type": "length", "length": 3}, logprobs=[-0.5, -1.25, -0.125])
    out["meta_info"]["output_token_logprobs"] = out["meta_info"]["output_token_logprobs"][:2]
    with pytest.raises(RuntimeError, match="do not match output_ids"):
        se.sample_from_sglang_output(out, return_logprobs=True)
    out["meta_info"]["finish_reason"] = {
        "type": "abort",
        "message": "Aborted",
        "status_code": None,
        "err_type": None,
    }
    sample = se.sample_from_sglang_output(out, return_logprobs=True)
    assert sample.token_ids == [5, 9] and sample.logprobs == [-0.5, -1.25]


def test_request_aborted_in_the_waiting_queue_is_an_empty_abort():
    # TokenizerManager._handle_abort_req: text, no tokens, abort reason, empty logprob list.
    out = {
        "text": "",
        "output_ids": [],
        "meta_info": {
            "id": "r:0:abc",
            "finish_reason": {"type": "abort", "message": "Abort in waiting queue"},
            "output_token_logprobs": [],
            "completion_tokens": 0,
        },
    }
    sample = se.sample_from_sglang_output(out, return_logprobs=True)
    assert sample.token_ids == [] and sample.logprobs == [] and sample.finish_reason == "abort"


def test_sampling_params_map_to_sglang_keys():
    params = SamplingParams(
        n=4, temperature=0.0, top_p=0.9, top_k=-1, max_new_tokens=32, stop_token_ids=(2, 7)
    )
    got = se.sglang_sampling_params(params, sampling_seed=123)
    assert got == {
        "n": 1,  # our n becomes n rows, each with its own rid and seed
        "max_new_tokens": 32,
        "temperature": 0.0,  # SamplingParams.__post_init__ turns 0 into greedy (top_k 1)
        "top_p": 0.9,
        "top_k": -1,  # -1 = whole vocabulary in sglang too
        "min_p": 0.0,
        "repetition_penalty": 1.0,
        "frequency_penalty": 0.0,
        "presence_penalty": 0.0,
        "stop_token_ids": [2, 7],
        "sampling_seed": 123,
        "no_stop_trim": True,
    }


def test_engine_keywords_from_the_worker_config():
    cfg = WorkerConfig(model_path="/m", tensor_parallel=2, device_mapping=[0, 1], dtype="auto")
    assert (
        se.engine_kwargs(cfg, seed=11)
        == {
            "model_path": "/m",
            "tp_size": 2,
            "ep_size": 1,
            "dtype": "bfloat16",  # our auto = bf16 on GPU; sglang's own "auto" would serve fp32 checkpoints in fp16
            "random_seed": 11,
            "skip_tokenizer_init": True,
        }
    )
    assert se.engine_kwargs(WorkerConfig(model_path="/m", dtype="fp32"), seed=0)["dtype"] == "float32"


def test_an_unlisted_keyword_is_refused_before_reaching_sglang():
    with pytest.raises(AssertionError, match="SGLANG_API does not list"):
        se._checked(se.GENERATE, {"input_ids": [[1]], "stream": True})


def test_constructor_checks_args_then_explains_a_missing_sglang(tmp_path):
    bad = WorkerConfig(model_path=str(tmp_path), strategy=StrategyConfig(name="sglang", args={"tp_sise": 2}))
    with pytest.raises(ValueError, match=r"actor_infer.strategy.args: 'tp_sise' .* did you mean 'tp_size'"):
        se.SGLangEngine(bad)
    try:
        import sglang  # noqa: F401
    except ImportError:
        cfg = WorkerConfig(model_path=str(tmp_path), strategy=StrategyConfig(name="sglang"))
        with pytest.raises(ImportError, match="strategy.name=native"):
            se.SGLangEngine(cfg)


def test_request_ids_must_be_unique_and_prompts_non_empty():
    # The engine checks a batch with the shared engine-protocol check, against its in-flight rids.
    in_flight, vocab_size = {"busy": ["x"]}, 10
    with pytest.raises(ValueError, match="already in flight"):
        validate_requests([GenerationRequest(request_id="busy", prompt_ids=[1])], in_flight, vocab_size)
    with pytest.raises(ValueError, match="empty prompt"):
        validate_requests([GenerationRequest(request_id="a", prompt_ids=[])], in_flight, vocab_size)
    with pytest.raises(ValueError, match=r"outside the vocabulary \[0, 10\)"):
        validate_requests([GenerationRequest(request_id="a", prompt_ids=[3, 12])], in_flight, vocab_size)
