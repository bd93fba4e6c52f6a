#!/usr/bin/env python3
"""Print one of the app's operations as it goes on the wire: with the
fragments it uses and __typename in every selection set (all but a
subscription's root). Reads ../shared/reference/selfprivacy-app.

Usage: app-operation.py NAME [REFERENCE_DIR]   (needs graphql-core)
"""
import glob
import os
import sys

from graphql import FieldNode, NameNode, OperationDefinitionNode, SelectionSetNode, parse, print_ast
from graphql.language import Visitor, visit

name = sys.argv[1]
here = os.path.dirname(os.path.abspath(__file__))
reference = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "../../shared/reference/selfprivacy-app")
definitions = {}
for path in sorted(glob.glob(os.path.join(reference, "*.graphql"))):
    if path.endswith("schema.graphql"):
        continue
    for node in parse(open(path).read()).definitions:
        definitions[node.name.value] = node


class AddTypename(Visitor):
    def enter_selection_set(self, node, key, parent, *_):
        if isinstance(parent, OperationDefinitionNode) and parent.operation.value == "subscription":
            return None
        if any(isinstance(s, FieldNode) and s.name.value == "__typename" for s in node.selections):
            return None
        typename = FieldNode(name=NameNode(value="__typename"))
        return SelectionSetNode(selections=tuple(node.selections) + (typename,))


def used(node, found):
    class Spreads(Visitor):
        def enter_fragment_spread(self, spread, *_):
            if spread.name.value not in found:
                found.append(spread.name.value)
                used(definitions[spread.name.value], found)

    visit(node, Spreads())
    return found


names = [name] + used(definitions[name], [])
print("\n\n".join(print_ast(visit(definitions[n], AddTypename())) for n in names))
