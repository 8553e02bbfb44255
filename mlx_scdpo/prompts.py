r"""Benchmark prompts.

* Chat models: the problem as a user turn followed by Qwen2.5-Math's instruction
  "Please reason step by step, and put your final answer within \boxed{}."; few-shot
  examples (if any) become earlier user/assistant turns.
* Base models: few-shot ``Question:/Answer:`` for GSM8K with the 8 chain-of-thought
  exemplars of Wei et al. 2022 (lm-eval ``gsm8k_cot``), and ``Problem:/Solution:`` for
  MATH with Minerva's 4 exemplars (Lewkowycz et al. 2022, lm-eval ``minerva_math``).
"""

from __future__ import annotations

import hashlib

from mlx_scdpo.errors import UserError

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
# Qwen2.5-Math's tool-integrated reasoning (TIR) instruction.
CODE_INSTRUCTION = (
    "Please integrate natural language reasoning with programs to solve the problem above, "
    "and put your final answer within \\boxed{}."
)

GSM8K_SHOTS = [
    (
        "There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are done, "
        "there will be 21 trees. How many trees did the grove workers plant today?",
        "There are 15 trees originally. Then there were 21 trees after some more were planted. So there must have "
        "been 21 - 15 = 6. The answer is 6.",
    ),
    (
        "If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?",
        "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is 5.",
    ),
    (
        "Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in total?",
        "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. After eating 35, "
        "they had 74 - 35 = 39. The answer is 39.",
    ),
    (
        "Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many lollipops did "
        "Jason give to Denny?",
        "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave Denny 20 - 12 = 8. "
        "The answer is 8.",
    ),
    (
        "Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys does he have now?",
        "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more toys. 5 + 4 = 9. "
        "The answer is 9.",
    ),
    (
        "There were nine computers in the server room. Five more computers were installed each day, from monday to "
        "thursday. How many computers are now in the server room?",
        "There were originally 9 computers. For each of 4 days, 5 more computers were added. So 5 * 4 = 20 computers "
        "were added. 9 + 20 is 29. The answer is 29.",
    ),
    (
        "Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. How many golf "
        "balls did he have at the end of wednesday?",
        "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. After losing 2 more, "
        "he had 35 - 2 = 33 golf balls. The answer is 33.",
    ),
    (
        "Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
        "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she has 23 - 15 dollars "
        "left. 23 - 15 is 8. The answer is 8.",
    ),
]

MATH_SHOTS = [
    (
        "Find the domain of the expression  $\\frac{\\sqrt{x-2}}{\\sqrt{5-x}}$.}",
        "The expressions inside each square root must be non-negative. Therefore, $x-2 \\ge 0$, so $x\\ge2$, and "
        "$5 - x \\ge 0$, so $x \\le 5$. Also, the denominator cannot be equal to zero, so $5-x>0$, which gives $x<5$. "
        "Therefore, the domain of the expression is $\\boxed{[2,5)}$.\nFinal Answer: The final answer is $[2,5)$. "
        "I hope it is correct.",
    ),
    (
        "If $\\det \\mathbf{A} = 2$ and $\\det \\mathbf{B} = 12,$ then find $\\det (\\mathbf{A} \\mathbf{B}).$",
        "We have that $\\det (\\mathbf{A} \\mathbf{B}) = (\\det \\mathbf{A})(\\det \\mathbf{B}) = (2)(12) = "
        "\\boxed{24}.$\nFinal Answer: The final answer is $24$. I hope it is correct.",
    ),
    (
        "Terrell usually lifts two 20-pound weights 12 times. If he uses two 15-pound weights instead, how many "
        "times must Terrell lift them in order to lift the same total weight?",
        "If Terrell lifts two 20-pound weights 12 times, he lifts a total of $2\\cdot 12\\cdot20=480$ pounds of "
        "weight.  If he lifts two 15-pound weights instead for $n$ times, he will lift a total of $2\\cdot15\\cdot "
        "n=30n$ pounds of weight.  Equating this to 480 pounds, we can solve for $n$:\n\\begin{align*}\n30n&=480\\\\\n"
        "\\Rightarrow\\qquad n&=480/30=\\boxed{16}\n\\end{align*}\nFinal Answer: The final answer is $16$. I hope it "
        "is correct.",
    ),
    (
        "If the system of equations\n\n\\begin{align*}\n6x-4y&=a,\\\\\n6y-9x &=b.\n\\end{align*}has a solution "
        "$(x, y)$ where $x$ and $y$ are both nonzero, find $\\frac{a}{b},$ assuming $b$ is nonzero.",
        "If we multiply the first equation by $-\\frac{3}{2}$, we obtain\n\n$$6y-9x=-\\frac{3}{2}a.$$Since we also "
        "know that $6y-9x=b$, we have\n\n$$-\\frac{3}{2}a=b\\Rightarrow\\frac{a}{b}=\\boxed{-\\frac{2}{3}}.$$\n"
        "Final Answer: The final answer is $-\\frac{2}{3}$. I hope it is correct.",
    ),
]


# Code-integrated exemplars: (question, [(kind, content), ...]) rendered in the chosen block format.
CODE_SHOTS = [
    (
        "Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
        [
            ("text", "The bagels cost 5 * 3 dollars; subtract that from 23.\n"),
            ("code", "left = 23 - 5 * 3\nprint(left)\n"),
            ("execution", "8"),
            ("text", "Olivia has $\\boxed{8}$ dollars left."),
        ],
    ),
    (
        "What is the sum of the roots of $x^2 - 5x + 6 = 0$?",
        [
            ("text", "Solve the quadratic with sympy.\n"),
            ("code", "from sympy import symbols, solve\nx = symbols('x')\nsum(solve(x**2 - 5*x + 6, x))\n"),
            ("execution", "5"),
            ("text", "The sum of the roots is $\\boxed{5}$."),
        ],
    ),
]


def render_code_solution(parts, fmt) -> str:
    """A worked code-integrated solution in block format ``fmt`` (an ``eval.blocks.BlockFormat``)."""
    out = []
    for kind, content in parts:
        if kind == "execution":
            out.append(fmt.execution_block(content))
        elif kind == "code":
            out.append(fmt.code_open + content + fmt.code_close)
        else:
            out.append(fmt.text_open + content + fmt.text_close if fmt.text_open else content)
    return "".join(out)


def default_num_shots(task: str, chat: bool, code: bool = False) -> int:
    if chat:
        return 0
    if code:
        return len(CODE_SHOTS)
    return 8 if task == "gsm8k" else 4


def prompt_settings(
    tokenizer, model: str, task: str, chat_template: bool | None, num_shots: int | None, code: bool
) -> tuple[bool, int]:
    """(chat, shots) of a run: the chat template when asked for, else when the tokenizer has one;
    the task's default few-shot count unless given. A chat template the tokenizer lacks is one line."""
    chat = chat_template if chat_template is not None else tokenizer.chat_template is not None
    if chat and tokenizer.chat_template is None:
        raise UserError(f"{model}: the tokenizer has no chat template (use --no-chat-template)")
    return chat, num_shots if num_shots is not None else default_num_shots(task, chat, code)


def _shots(task: str, k: int, fmt=None) -> list[tuple[str, str]]:
    if fmt is not None:
        pool = [(q, render_code_solution(parts, fmt)) for q, parts in CODE_SHOTS]
    else:
        pool = GSM8K_SHOTS if task == "gsm8k" else MATH_SHOTS
    return pool[: max(0, min(k, len(pool)))]


def fewshot_prompt(task: str, question: str, num_shots: int, fmt=None) -> str:
    """Plain-text few-shot prompt for a base model (code-integrated exemplars when ``fmt``)."""
    if task == "gsm8k" or fmt is not None:
        blocks = [f"Question: {q}\nAnswer: {a}" for q, a in _shots(task, num_shots, fmt)]
        blocks.append(f"Question: {question}\nAnswer:")
    else:
        blocks = [f"Problem:\n{q}\n\nSolution:\n{a}" for q, a in _shots(task, num_shots)]
        blocks.append(f"Problem:\n{question}\n\nSolution:")
    return "\n\n".join(blocks)


def chat_messages(task: str, question: str, num_shots: int, fmt=None) -> list[dict]:
    """Chat messages: optional few-shot turns, then the question with the boxed (or TIR) instruction."""
    instruction = CODE_INSTRUCTION if fmt is not None else INSTRUCTION
    messages = []
    for q, a in _shots(task, num_shots, fmt):
        messages += [{"role": "user", "content": f"{q}\n{instruction}"}, {"role": "assistant", "content": a}]
    messages.append({"role": "user", "content": f"{question}\n{instruction}"})
    return messages


def build_prompt_tokens(
    tokenizer, task: str, question: str, num_shots: int, chat: bool, fmt=None
) -> tuple[list[int], str]:
    """Token ids and text of the prompt for one problem; ``fmt`` selects code-integrated prompts."""
    if chat:
        text = tokenizer.apply_chat_template(
            chat_messages(task, question, num_shots, fmt), add_generation_prompt=True, tokenize=False
        )
        # The template already carries any BOS token.
        return tokenizer.encode(text, add_special_tokens=False), text
    text = fewshot_prompt(task, question, num_shots, fmt)
    return tokenizer.encode(text), text


#: Every prompt style's next-problem header: a few-shot prompt (``fewshot_prompt``) starts each
#: problem with "Question:" (GSM8K, code-integrated) or "Problem:" (MATH, as lm-eval's
#: ``minerva_math`` stops at "Problem:"), so a base model that runs on past its answer writes
#: one of these next. Chat prompts end on the template's EOS and rarely reach them.
DEFAULT_STOP = ("\n\nQuestion:", "\n\nProblem:")


def stop_strings(stop=None) -> tuple[str, ...]:
    """The text stop strings of a run: ``stop`` when given (``--stop``, repeatable; an empty
    string, ``--stop ''``, means none), else ``DEFAULT_STOP``."""
    if stop is None:
        return DEFAULT_STOP
    return tuple(dict.fromkeys(s for s in stop if s))


def prompts_hash(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]
