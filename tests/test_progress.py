import io

from tqdm import tqdm

from arc_data.progress import PlainProgress, progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_terminal_gets_a_tqdm_bar():
    with progress(total=3, desc="tasks", file=Terminal()) as bar:
        assert isinstance(bar, tqdm) and not bar.disable
        bar.update(1)


def test_a_stream_that_is_not_a_terminal_gets_plain_lines():
    assert isinstance(progress(total=3, file=io.StringIO()), PlainProgress)
    assert progress(total=3, disable=True, file=io.StringIO()).disable  # disabled: a silent tqdm either way


def test_plain_lines_come_at_the_interval_with_count_total_rate_and_postfix():
    out, clock = io.StringIO(), Clock()
    bar = PlainProgress(total=100, desc="train", initial=10, file=out, every=30, clock=clock)
    for _ in range(5):  # 5 steps in 25 s: no line yet
        clock.now += 5
        bar.update(1)
    assert out.getvalue() == ""
    clock.now += 5
    bar.set_postfix(loss="0.412")
    bar.update(1)  # 30 s: the first line
    assert out.getvalue().splitlines() == ["train: 16/100 (16%), 0.2/s, 00:30 elapsed, 07:00 left, loss=0.412"]
    clock.now += 29
    bar.update(4)
    assert len(out.getvalue().splitlines()) == 1  # 29 s since the last line
    clock.now += 1
    bar.update(0)
    assert len(out.getvalue().splitlines()) == 2
    bar.close()  # nothing moved since: no last line
    assert len(out.getvalue().splitlines()) == 2


def test_plain_iteration_counts_and_closes_with_a_last_line():
    out = io.StringIO()
    items = list(PlainProgress(range(4), desc="tables", file=out, every=30))
    assert items == [0, 1, 2, 3]
    assert out.getvalue().startswith("tables: 4/4 (100%), ") and out.getvalue().count("\n") == 1
    quiet = io.StringIO()
    assert list(PlainProgress(range(2), leave=False, file=quiet)) == [0, 1] and quiet.getvalue() == ""
