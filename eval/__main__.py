"""``python -m eval score COMPLETIONS.jsonl --task gsm8k|math|math500``."""

import click

from eval.cli import OneLineErrors, score_command


@click.group(cls=OneLineErrors)
def main():
    """Standalone GSM8K / MATH grading."""


main.add_command(score_command)

if __name__ == "__main__":
    main()
