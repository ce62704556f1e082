"""``python -m submission.kaggle build|rehearse|push``: see the package's docstring."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from arc_data.grids import ArcDataError
from pretrain.import_official import OFFICIAL_RECIPES
from pretrain.kaggle_facts import COMPETITIONS, DEFAULT_COMPETITION, KAGGLE_PLATFORM, KAGGLE_PYTHONS, RERUN_ENV
from submission.kaggle.build import BuildConfig, build, print_instructions
from submission.kaggle.layout import (BAD_INPUT, DEFAULT_PRESET, USER_PLACEHOLDER, CheckFailed, Layout, PackagingError,
                                      read_build_file)
from submission.kaggle.push import PushConfig, check_can_push, push
from submission.kaggle.rehearse import RehearsalConfig, rehearse
from submission.writer import SubmissionError

CHECK_FAILED = 1  # the notebook ran, locally or on Kaggle, and failed a check


def default_source() -> Path:
    return Path(__file__).resolve().parents[2]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m submission.kaggle",
                                     description="Package the project for Kaggle's offline notebook, rehearse the "
                                                 "notebook locally, and push it.")
    commands = parser.add_subparsers(dest="command", required=True)

    build_parser = commands.add_parser("build", help="write code/, weights/, wheels/ and notebook/")
    build_parser.add_argument("out_dir", type=Path)
    build_parser.add_argument("--checkpoint", type=Path, required=True,
                              help="exported network folder, or a checkpoint file of the official TRM/HRM code")
    add_build_options(build_parser)
    build_parser.add_argument("--push", action="store_true", help="then upload and run it (as the push command)")
    add_push_options(build_parser)

    rehearse_parser = commands.add_parser("rehearse", help="run the built notebook locally, as Kaggle would")
    rehearse_parser.add_argument("out_dir", type=Path, help="a build folder (built first when --checkpoint is given)")
    rehearse_parser.add_argument("--challenges", type=Path, required=True, help="Kaggle-layout challenges file")
    rehearse_parser.add_argument("--solutions", type=Path, help="to score the rehearsal's submission")
    rehearse_parser.add_argument("--checkpoint", type=Path,
                                 help="build OUT_DIR first from this exported network (or official checkpoint file)")
    add_build_options(rehearse_parser)
    rehearse_parser.add_argument("--time-limit", type=float,
                                 help="the notebook's whole budget in seconds (Kaggle's is 12 h); killed at it")
    rehearse_parser.add_argument("--rerun", action="store_true",
                                 help=f"set {RERUN_ENV}, as Kaggle's scored rerun does (the preset "
                                      "is the build's either way)")
    rehearse_parser.add_argument("--keep", action="store_true", help="keep the Kaggle folders afterwards")
    rehearse_parser.add_argument("--workdir", type=Path,
                                 help="a new folder for the Kaggle folders (default: a temporary one)")
    rehearse_parser.add_argument("--detach", action="append", default=[], metavar="SLUG",
                                 help="leave this dataset unattached (e.g. arc-trm-weights), to see the notebook "
                                      "survive it")
    rehearse_parser.add_argument("--min-predicted", type=float, default=0.5, metavar="SHARE",
                                 help="fail when fewer tasks than this share are predicted (default 0.5)")

    push_parser = commands.add_parser("push", help="upload a build, run the notebook on Kaggle and check its output")
    push_parser.add_argument("out_dir", type=Path, help="a build folder")
    push_parser.add_argument("--competition", choices=sorted(COMPETITIONS), help="default: the build's")
    push_parser.add_argument("--user", default=default_user(), help="Kaggle username (default $KAGGLE_USERNAME)")
    add_push_options(push_parser)
    return parser.parse_args(argv)


def default_user() -> str:
    return os.environ.get("KAGGLE_USERNAME") or USER_PLACEHOLDER


def add_build_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--competition", default=DEFAULT_COMPETITION, choices=sorted(COMPETITIONS),
                        help=f"competition slug (default {DEFAULT_COMPETITION})")
    parser.add_argument("--user", default=default_user(), help="Kaggle username (default $KAGGLE_USERNAME)")
    parser.add_argument("--preset", help="the make_submission preset the notebook runs, on the pushed run and on "
                                         f"the scored rerun alike (default {DEFAULT_PRESET})")
    parser.add_argument("--wheels", action=argparse.BooleanOptionalAction, default=True,
                        help="download the wheelhouse (--no-wheels for tests)")
    parser.add_argument("--python", action="append", dest="pythons", metavar="X.Y",
                        help="a Python of Kaggle's image to download wheels for (repeat; default "
                             f"{' '.join(KAGGLE_PYTHONS)})")
    parser.add_argument("--platform", default=KAGGLE_PLATFORM, help="platform tag of Kaggle's image")
    parser.add_argument("--find-links", type=Path, help="a local folder of wheels instead of the package index")
    parser.add_argument("--source", type=Path, default=default_source(), help="project root (holds pyproject.toml)")
    parser.add_argument("--recipe", choices=sorted(OFFICIAL_RECIPES),
                        help="official checkpoint without an all_config.yaml beside it: its known config")
    parser.add_argument("--config", type=Path, dest="official_config",
                        help="official checkpoint: its all_config.yaml (default: beside it)")
    parser.add_argument("--set", nargs="+", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                        help="official checkpoint: change a config value, e.g. --set H_cycles=4 halt_max_steps=10")


def add_push_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", type=Path, help="where the notebook's output goes (default OUT_DIR/kaggle-output)")
    parser.add_argument("--test-challenges", type=Path,
                        help="the competition's visible test file, to check the notebook's submission against")
    parser.add_argument("--poll-seconds", type=float, default=30.0, help="between two status checks (default 30)")


def build_config(args: argparse.Namespace) -> BuildConfig:
    return BuildConfig(out_dir=args.out_dir, checkpoint=args.checkpoint, source=args.source, user=args.user,
                       competition=args.competition, preset=args.preset or DEFAULT_PRESET, wheels=args.wheels,
                       pythons=tuple(args.pythons or KAGGLE_PYTHONS), platform=args.platform,
                       find_links=args.find_links, recipe=args.recipe, official_config=args.official_config,
                       sets=tuple(item for group in args.sets for item in group))


def push_config(args: argparse.Namespace) -> PushConfig:
    layout = Layout(args.out_dir)
    competition = args.competition or read_build_file(layout).get("competition", DEFAULT_COMPETITION)
    return PushConfig(layout=layout, user=args.user, competition=competition,
                      output_dir=args.output or args.out_dir / "kaggle-output", challenges=args.test_challenges,
                      poll_seconds=args.poll_seconds)


def argument_problem(args: argparse.Namespace) -> str | None:
    """A number that would run nothing, or forever: one line, before any work."""
    time_limit = getattr(args, "time_limit", None)
    if time_limit is not None and not (math.isfinite(time_limit) and time_limit > 0):
        return f"--time-limit must be a positive number of seconds, got {time_limit:g}"
    min_predicted = getattr(args, "min_predicted", 0.5)
    if not 0 <= min_predicted <= 1:
        return f"--min-predicted must be a share between 0 and 1, got {min_predicted:g}"
    poll_seconds = getattr(args, "poll_seconds", 0.0)
    if not (math.isfinite(poll_seconds) and poll_seconds >= 0):
        return f"--poll-seconds must be zero or more, got {poll_seconds:g}"
    return None


def run(args: argparse.Namespace) -> None:
    if args.command == "push":
        push(push_config(args))
    elif args.command == "build":
        if args.push:
            check_can_push(args.user, args.competition)  # before building: a missing credential costs no download
        layout = build(build_config(args))
        print_instructions(layout, build_config(args))
        if args.push:
            push(push_config(args))
    else:
        if args.checkpoint is not None:
            build(build_config(args))
        elif args.preset is not None:
            check_rehearsed_preset(Layout(args.out_dir), args.preset)
        rehearse(RehearsalConfig(build_dir=args.out_dir, challenges=args.challenges, solutions=args.solutions,
                                 keep=args.keep, workdir=args.workdir, time_limit=args.time_limit, rerun=args.rerun,
                                 competition=args.competition, detach=tuple(args.detach),
                                 min_predicted=args.min_predicted))


def check_rehearsed_preset(layout: Layout, preset: str) -> None:
    """A rehearsal runs what the build will run on Kaggle; --preset without --checkpoint cannot change it."""
    built = read_build_file(layout)["preset"]
    if preset != built:
        raise PackagingError(f"{layout.root} runs preset {built}; --preset {preset} applies when building "
                             "(rehearse --checkpoint, or build again)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = argument_problem(args)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return BAD_INPUT
    try:
        run(args)
    except CheckFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return CHECK_FAILED
    except (PackagingError, ArcDataError, SubmissionError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
