"""Bibliography entries labelled like the author-year citations in the text.

The book cites as "Higgins et al., 2017" (``bibtex_reference_style: author_year``), but pybtex's
styles label the bibliography entries "[HMP+17]". This Sphinx extension registers a pybtex style,
``author_year``, whose labels are the citations' own text ("Higgins et al., 2017"; "a", "b", ...
appended where two entries would share one) and whose entries are sorted by author and year.
``_config.yml`` loads it (``sphinx.local_extensions``) and makes it the default style.
"""

from collections import Counter

from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle


def _last_name(person) -> str:
    return Text.from_latex(" ".join(person.last_names)).render_as("text")


def _label(entry) -> str:
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    year = entry.fields.get("year", "n.d.")
    if not people:
        return f"{entry.fields.get('title', entry.key)}, {year}"
    if len(people) == 1:
        names = _last_name(people[0])
    elif len(people) == 2:
        names = f"{_last_name(people[0])} and {_last_name(people[1])}"
    else:
        names = f"{_last_name(people[0])} et al."
    return f"{names}, {year}"


class AuthorYearLabels(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        entries = list(sorted_entries)
        labels = [_label(e) for e in entries]
        total, seen = Counter(labels), Counter()
        for label in labels:
            if total[label] > 1:
                seen[label] += 1
                yield label + "abcdefghijklmnopqrstuvwxyz"[seen[label] - 1]
            else:
                yield label


class AuthorYearStyle(PlainStyle):
    default_label_style = "author_year"


register_plugin("pybtex.style.labels", "author_year", AuthorYearLabels)
register_plugin("pybtex.style.formatting", "author_year", AuthorYearStyle)


def setup(app):
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
