"""Tasks and grading: the default arithmetic task, and GSM8K / MATH-500 files (slices in tests/data; the
full files from ../shared/data where they are)."""

from __future__ import annotations

import json
import os
import random
import threading
from pathlib import Path

import pytest

from edge_adapt.errors import EdgeAdaptError
from edge_adapt.tasks import ArithmeticTask, answers_equal, extract_answer, get_task
from edge_adapt.tasks.arithmetic import TEST_PER_LEVEL, solve, split_of
from edge_adapt.tasks.expressions import to_chain, to_conventional
from edge_adapt.tasks.gsm8k import GSM8KTask
from edge_adapt.tasks.math_problems import MATHTask

# The real benchmark files live next to the checkout (../shared/data); EDGE_ADAPT_DATA points
# elsewhere, e.g. for a clone made in another directory.
DATA = Path(os.environ.get("EDGE_ADAPT_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
GSM8K = DATA / "gsm8k" / "test.jsonl"
MATH500 = DATA / "math500" / "test.jsonl"


def needs(path: Path) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not path.is_file(), reason=f"{path} is not here (the full benchmark files sit beside the "
                                                         "checkout in ../shared/data, or where EDGE_ADAPT_DATA says)")


# -- the default task ---------------------------------------------------------------------------


def test_splits_are_disjoint_deterministic_and_balanced() -> None:
    task = ArithmeticTask()
    test = task.problems("test", list(TEST_PER_LEVEL))
    assert len(test) == 500
    assert [sum(p.level == lv for p in test) for lv in range(1, 7)] == list(TEST_PER_LEVEL)
    assert test == task.problems("test", list(TEST_PER_LEVEL))  # same seed, same list
    assert task.problems("test", 5, seed=1) != task.problems("test", 5, seed=0)
    calib = task.problems("calibration", 50)
    train = {task.sample(random.Random(i), 1 + i % 6).question for i in range(3000)}
    train = {q for q in train if split_of(q) == "train"}
    questions = [{p.question for p in ps} for ps in (test, calib)] + [train]
    assert all(not a & b for i, a in enumerate(questions) for b in questions[i + 1 :])
    assert all(split_of(p.question) == "test" for p in test)
    assert len({p.question for p in test}) == 500


def test_levels_get_harder_and_solutions_follow_the_format() -> None:
    task = ArithmeticTask()
    problems = task.problems("test", 20)
    for p in problems:
        steps = solve(p.question)
        assert len(steps) == task.levels[p.level - 1].n_ops
        assert str(steps[-1][3]) == p.answer
        solution = task.solution(p)
        parts = solution.split("\n\n")
        assert len(parts) == len(steps) + 1
        assert parts[-1] == f"A:{p.answer}"
        assert task.prompt(p) == f"Q:{p.question}\n"
        assert task.is_correct(solution, p)
        assert not task.is_correct(solution.replace(f"A:{p.answer}", f"A:{int(p.answer) + 1}"), p)
        assert not task.is_correct(solution.rsplit("\n\n", 1)[0], p)  # no answer line
    lengths = [sum(len(task.solution(p)) for p in problems if p.level == lv) for lv in range(1, 7)]
    # longer chains or larger operands through levels 1-3, then four-digit chains of 3, 5 and 8 operations (4-6)
    assert lengths[0] < lengths[1] < lengths[2]
    assert lengths[3] < lengths[4] < lengths[5]
    assert lengths[0] < lengths[3]


def test_a_question_is_placed_in_the_level_whose_shape_it_has() -> None:
    task = ArithmeticTask()
    problems = task.problems("test", TEST_PER_LEVEL) + task.problems("train", 30, seed=7)
    assert [task.level_of(p.question) for p in problems] == [p.level for p in problems]
    # outside every level: operand digits, chain length, a multiplier of 12, a negative step
    for question in ("37+48*3", "1+2", "12+34+56", "454+762*12", "3348*6+7430*2-9999*9", "12-34"):
        assert task.level_of(question) is None, question
    assert task.level_of("454+762*3") == 2
    assert task.level_of("3348*6+7430*2") == 4


def test_task_registry_and_bad_requests() -> None:
    assert isinstance(get_task("default"), ArithmeticTask)
    one_at_a_time = get_task("gsm8k")  # no file: questions come one at a time (solve)
    assert one_at_a_time.problems() == []
    assert one_at_a_time.parse_question("What is 2+3?").question == "What is 2+3?"
    with pytest.raises(EdgeAdaptError, match="--data"):
        one_at_a_time.problem_at(0)
    with pytest.raises(EdgeAdaptError, match="unknown task"):
        get_task("mmlu")
    with pytest.raises(EdgeAdaptError, match="unknown split"):
        ArithmeticTask().problems("dev", 3)
    with pytest.raises(EdgeAdaptError, match="--index"):
        ArithmeticTask().problem("test", 500)


def test_every_task_gives_its_benchmark_an_index_and_a_users_question(tmp_path: Path) -> None:
    task = ArithmeticTask()
    assert task.benchmark_problems() == task.problems("test", list(TEST_PER_LEVEL))
    assert task.problem_at(420) == task.benchmark_problems()[420]
    assert task.warm_up_problem() not in task.benchmark_problems()
    mine = task.parse_question(" Q:(454+762)*3 ")
    assert (mine.question, mine.answer, mine.level, mine.meta) == ("454+762*3", "3648", 2, {})
    assert task.display_question(mine) == "(454+762)*3"
    # the usual precedence: 454+762*3 is 454+2286, asked as the chain that computes it
    usual = task.parse_question("454+762*3")
    assert (usual.question, usual.answer, usual.level) == ("762*3+454", "2740", 2)
    assert "762*3+454" in usual.meta["note"]
    assert "unlike every level" in task.parse_question("37+48*3").meta["warning"]
    with pytest.raises(EdgeAdaptError, match="not an arithmetic expression"):
        task.parse_question("what is two plus two?")
    with pytest.raises(EdgeAdaptError, match=r"cannot be asked as one chain.*\(454\+762\)\*3"):
        task.parse_question("3348*6+7430*2")
    path = tmp_path / "gsm.jsonl"
    path.write_text(json.dumps({"question": "1+1?", "answer": "2\n#### 2"}) + "\n" + json.dumps({"question": "2+2?",
                                                                                                 "answer": "#### 4"}) + "\n")
    file_task = GSM8KTask(path)
    assert file_task.benchmark_problems() == file_task.problems()
    assert file_task.problem_at(1).answer == "4"
    assert file_task.warm_up_problem() == file_task.problems()[0]
    assert file_task.parse_question(" How many? ") == type(mine)(id="cli", question="How many?", answer="")
    with pytest.raises(EdgeAdaptError, match=r"--index must be in 0\.\.1"):
        file_task.problem_at(2)


# -- real benchmark files -------------------------------------------------------------------------


# small slices ship with the tests (tests/data/*/LICENSE); the full files run where they are
GSM8K_SLICE = Path(__file__).parent / "data" / "gsm8k" / "slice.jsonl"
MATH500_SLICE = Path(__file__).parent / "data" / "math500" / "slice.jsonl"


@pytest.mark.parametrize("path,rows", [(GSM8K_SLICE, 51), pytest.param(GSM8K, 1319, marks=needs(GSM8K))])
def test_gsm8k_gold_solutions_all_grade_correct(path: Path, rows: int) -> None:
    task = GSM8KTask(path)
    problems = task.problems()
    assert len(problems) == rows
    assert all(task.is_correct(p.meta["solution"], p) for p in problems)
    # and the grader is not trivially true: each solution against another problem's answer
    shuffled = problems[1:] + problems[:1]
    wrong = sum(task.is_correct(p.meta["solution"], q) for p, q in zip(problems, shuffled, strict=True))
    assert wrong <= max(1, 0.02 * len(problems))


@pytest.mark.parametrize("path,rows", [(MATH500_SLICE, 50), pytest.param(MATH500, 500, marks=needs(MATH500))])
def test_math500_gold_solutions_grade_correct(path: Path, rows: int) -> None:
    task = MATHTask(path)
    problems = task.problems()
    assert len(problems) == rows
    assert all(p.level in range(1, 6) for p in problems)
    failures = [p.id for p in problems if not task.is_correct(p.meta["solution"], p)]
    assert len(failures) <= max(1, rows // 100), failures  # at least 99%
    shuffled = problems[1:] + problems[:1]
    wrong = sum(task.is_correct(p.meta["solution"], q) for p, q in zip(problems, shuffled, strict=True))
    assert wrong <= max(2, 0.05 * len(problems))



@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("so the total is \\boxed{\\frac{3}{4}}. Then 12", "\\frac{3}{4}"),
        ("Step 1...\nThe answer is 1,250.\nsome trailing 7", "1250"),
        # chat output: prose after the answer, units and currency written out (one answer, one vote)
        ("So she pays 600 in all. The answer is 600. The reason we know this is that", "600"),
        ("The answer is $18 dollars.", "18"),
        ("The answer is 18.", "18"),
        ("The answer is: 20 minutes", "20"),
        ("The final answer is -7.", "-7"),
        ("The answer is 12 and 13.", "12"),  # prose: its first number
        ("The answer is x = 5.", "5"),
        ("The answer is indeed 76.", "76"),
        ("The answer is 8*8 = 64.", "64"),  # an equation: its right side (SmolLM2 wrote these)
        ("The answer is 2+2=4", "4"),
        ("So we have 5 - 4 = 1 and 9,", "9"),  # the last number, without the comma after it
        ("14*5 = 70\nThe answer is N.", "70"),  # an instruction copied says nothing: the last number
        ("The answer is 181. The answer is 17.", "17"),  # the last marker
        ("blah\n#### 42", "42"),
        ("we get 3 apples, then 17 pears", "17"),
        ("the final answer is $\\boxed{(1, 2)}$.", "(1, 2)"),
        ("nothing numeric here", None),
    ],
)
def test_extraction_conventions(text: str, answer: str | None) -> None:
    assert extract_answer(text) == answer


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ("1,250", "1250", True),
        ("0.5", "\\frac{1}{2}", True),
        ("\\dfrac{3}{4}", "0.75", True),
        ("18", "$18", True),
        ("17", "18", False),
        ("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
        ("x^2+1", "1+x^2", True),
        (None, "3", False),
    ],
)
def test_answer_equivalence(a: str | None, b: str, equal: bool) -> None:
    assert answers_equal(a, b) is equal


def test_malformed_lines_are_reported_with_their_numbers(tmp_path: Path) -> None:
    lines = [
        json.dumps({"question": "1+1?", "answer": "1+1=2\n#### 2"}),
        "{broken json",
        json.dumps({"question": "2+2?"}),
        json.dumps({"question": "3+3?", "answer": "no final line"}),
        json.dumps(["not", "an", "object"]),
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(EdgeAdaptError) as err:
        GSM8KTask(path)
    message = str(err.value)
    assert "4 malformed line(s)" in message
    for n in (2, 3, 4, 5):
        assert f"line {n}:" in message
    assert "answer" in message
    assert "####" in message
    with pytest.raises(EdgeAdaptError, match="no such file"):
        MATHTask(tmp_path / "missing.jsonl")


@pytest.mark.parametrize("chain", ["454+762*3", "3348*6+7430*2", "12-34*5+6", "9*8-7*6", "5+6+7"])
def test_a_chain_shown_the_usual_way_reads_back_as_the_same_chain_and_value(chain: str) -> None:
    shown = to_conventional(chain)
    assert to_chain(shown) == chain
    assert eval(shown) == solve(chain)[-1][3]


@pytest.mark.parametrize(("typed", "chain"), [("454+762*3", "762*3+454"), ("(454+762)*3", "454+762*3"),
                                                ("3*(4+5)", "4+5*3"), ("100-7*3", None), ("2*3+4*5",
                                                                                          None), ("(1+2)*(3+4)", None)])
def test_a_users_expression_becomes_the_chain_with_its_value_or_a_clear_error(typed: str, chain: str | None) -> None:
    if chain is None:
        with pytest.raises(EdgeAdaptError, match="cannot be asked as one chain"):
            to_chain(typed)
        return
    assert to_chain(typed) == chain
    assert solve(chain)[-1][3] == eval(typed)
    for bad in ("2**3", "import os", "1/2", "", "1+", "(1+2"):
        with pytest.raises(EdgeAdaptError):
            to_chain(bad)


def _in_a_deep_stack(call, depth: int = 900):
    """``call()`` from ``depth`` Python frames down, on a thread of its own: where a server's
    request handler may stand when it reads a question."""
    outcome: list = []

    def descend(n: int) -> None:
        if n:
            descend(n - 1)
            return
        try:
            outcome.append(call())
        except BaseException as exc:  # handed back to the test
            outcome.append(exc)

    thread = threading.Thread(target=descend, args=(depth,))
    thread.start()
    thread.join()
    return outcome[0]


def test_the_expression_reader_reads_its_limits_from_a_deep_stack_without_recursing() -> None:
    product = "*".join(["2"] * 200)  # 199 operations
    assert _in_a_deep_stack(lambda: to_chain(product)) == product
    chain = "+".join(str(i) for i in range(1, 201))
    assert _in_a_deep_stack(lambda: to_chain(chain)) == chain
    nested = "(" * 32 + "454+762" + ")" * 32 + "*3"
    assert _in_a_deep_stack(lambda: to_chain(nested)) == "454+762*3"
    # one more of either limit is a clear error, never a SystemError or RecursionError
    too_long = _in_a_deep_stack(lambda: to_chain(product + "*2*2"))
    assert isinstance(too_long, EdgeAdaptError)
    assert "at most 200" in str(too_long)
    too_deep = _in_a_deep_stack(lambda: to_chain("(" * 33 + "1+2" + ")" * 33))
    assert isinstance(too_deep, EdgeAdaptError)
    assert "32 deep" in str(too_deep)
    for malformed in ("1+*2", "(1+2", "1+2)", "()", "-3+4", "2**3", "(1)(2)"):
        error = _in_a_deep_stack(lambda m=malformed: to_chain(m))
        assert isinstance(error, EdgeAdaptError), malformed


def test_a_candidate_cut_off_before_its_end_has_no_answer_and_no_vote(searcher) -> None:
    from edge_adapt.search import BestOfN, SearchSettings

    capped = type(searcher)(searcher.generator, searcher.prm, searcher.task, SearchSettings(max_steps=1))
    problem = searcher.task.problems("test", 1)[-1]  # the longest chains: one step does not finish them
    result = capped.run(BestOfN(n=6, select="majority"), problem, seed=0)
    unfinished = [c for c in result.candidates if not c.end.finished]
    assert unfinished
    assert all(c.answer is None for c in unfinished)
    finished = [c for c in result.candidates if c.end.finished]
    assert all(c.answer == searcher.task.extract_answer(c.text) for c in finished)


def test_answers_are_read_from_what_smollm2_actually_wrote() -> None:
    fixture = json.loads((Path(__file__).parent / "data" / "smollm2_outputs.json").read_text())
    got = [(o["text"][-60:], extract_answer(o["text"])) for o in fixture["outputs"]]
    assert [a for _, a in got] == [o["extracted"] for o in fixture["outputs"]], got
