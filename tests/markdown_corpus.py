"""AI-style answers for the streaming markdown tests and benchmark: headings, lists, tables,
fences, links, emphasis, and the constructs whose meaning depends on later lines."""

from __future__ import annotations

ANSWERS: dict[str, str] = {
    "overview": """# Deploying a Django app

Here is a **short** overview of the _steps_ you need, with `manage.py` commands.

## 1. Prepare

1. Install the dependencies:
   ```bash
   pip install -r requirements.txt
   ```
2. Run the **migrations**: `python manage.py migrate`
3. Collect static files

   This step copies *every* asset into `STATIC_ROOT`.

## 2. Configure

| Setting | Value | Notes |
|---|:---:|--:|
| `DEBUG` | `False` | **never** `True` in production |
| `ALLOWED_HOSTS` | `["example.com"]` | see the [docs](https://docs.djangoproject.com/) |

> **Tip:** keep secrets out of the repository.
> Use environment variables instead.

See https://example.com/guide or www.example.org for ~~more~~ everything else.
""",
    "code": """Sure! Here's a Python function:

```python
def fib(n: int) -> int:
    \"\"\"Return the n-th Fibonacci number.\"\"\"
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a
```

And the same in JavaScript:

~~~js
const fib = (n) => (n < 2 ? n : fib(n - 1) + fib(n - 2));
~~~

    an indented block
    of code

Call it as `fib(10)` — it returns **55**.
""",
    "lists": """Things to check:

- tight item one
- tight item two
  continued lazily
lazy continuation line
- item with a nested list
  - nested *a*
  - nested **b**

- loose after a blank line

* a different marker starts a new list
+ and another

3. ordered, starting at three
4. four

Paragraph after the lists.
""",
    "setext": """Main title
==========

Subtitle
--------

A paragraph
that spans lines
and then gets an underline
---

***

Text right before a rule

- - -
Final words.
""",
    "references": """Cite the [manual][man] and the [guide] before [unknown] things.

Inline [link](https://example.com/a "Title") and ![logo](https://example.com/logo.png).

[man]: https://example.com/manual
[guide]: <https://example.com/guide> 'The guide'

Later text uses [man] again and [Guide] case-insensitively.
""",
    "blockquote": """> Quoted paragraph
lazily continued
> - a list in a quote
> - second
>
> ```
> code in a quote
> ```

Outside again, with a table:

a | b
--|--
1 | 2
3 | 4
not a row without pipes

Done.
""",
    "hostile": """Some <b>raw</b> html and <script>alert(1)</script> and
<img src=x onerror=alert(1)>.

[click](javascript:alert(1)) and [data](data:text/html,<script>alert(1)</script>) and
![pixel](data:image/png;base64,iVBORw0KGgo=) and <javascript:alert(1)>.

<div onclick="alert(1)">div</div>

[ok](https://example.com/?q=<script>)
""",
    "crlf": "Windows\r\nline endings\r\n\r\n- one\r\n- two\r\n\r\nend\r\n",
    "unterminated": """Ends without closing things: **bold and *italic and `code and [link](https://exa""",
}
