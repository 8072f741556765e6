// @ts-check
/**
 * ESLint rule `millrace/no-silent-catch`: a promise rejection handler that does
 * nothing (`.catch(() => {})`, `.then(f, () => {})`, `() => undefined`) must say
 * why the error cannot matter, in a comment inside the handler, at the end of
 * its line, or on the line before it or before its statement; one comment
 * above a run of adjacent statements that each drop an error covers the run.
 * Anything else should log the error. Empty `catch {}` blocks are the core rule `no-empty`,
 * which accepts a comment in the block for the same reason.
 */

/** @typedef {import('eslint').Rule.RuleModule} RuleModule */
/** @typedef {import('eslint').Rule.Node} Node */

/** @param {Node | undefined} fn */
function isSilentHandler(fn) {
  if (!fn || (fn.type !== 'ArrowFunctionExpression' && fn.type !== 'FunctionExpression')) return false;
  const body = fn.body;
  if (body.type === 'BlockStatement') return body.body.length === 0;
  if (body.type === 'Identifier') return body.name === 'undefined';
  return body.type === 'UnaryExpression' && body.operator === 'void' && body.argument.type === 'Literal';
}

/** @type {RuleModule} */
export const noSilentCatch = {
  meta: {
    type: 'problem',
    docs: { description: 'Disallow promise rejection handlers that drop the error without a comment saying why.' },
    schema: [],
    messages: {
      silent:
        'This rejection handler drops the error. Log it, or say in a comment (inside the handler or on the line before) why it cannot matter.',
    },
  },
  create(context) {
    const source = context.sourceCode;
    /** Statements whose silent handler is explained; a statement right below one inherits it. */
    const explainedStatements = new Set();
    return {
      CallExpression(node) {
        const callee = node.callee;
        if (callee.type !== 'MemberExpression' || callee.property.type !== 'Identifier') return;
        const method = callee.property.name;
        const handler = method === 'catch' ? node.arguments[0] : method === 'then' ? node.arguments[1] : undefined;
        if (!isSilentHandler(/** @type {Node | undefined} */ (handler)) || !handler?.range || !handler.loc) return;
        const [from, to] = handler.range;
        const startLine = handler.loc.start.line;
        const endLine = handler.loc.end.line;
        const ancestors = source.getAncestors(node).reverse();
        // The statement that holds the call, as an item of its block (a `for` around it counts).
        const at = ancestors.findIndex((a, i) => {
          const parent = ancestors[i + 1];
          return parent !== undefined && 'body' in parent && Array.isArray(parent.body);
        });
        const statement = at >= 0 ? ancestors[at] : undefined;
        const statementLine = statement?.loc?.start.line ?? startLine;
        const explained =
          source.getAllComments().some((c) => {
            if (!c.range || !c.loc) return false;
            if (c.range[0] >= from && c.range[1] <= to) return true;
            if (c.range[0] >= to && c.loc.start.line === endLine) return true;
            return c.loc.end.line === startLine - 1 || c.loc.end.line === statementLine - 1;
          }) || followsExplained(statement, ancestors[at + 1]);
        if (statement && explained) explainedStatements.add(statement);
        if (!explained) context.report({ node: handler, messageId: 'silent' });
      },
    };

    /**
     * Whether the statement before `statement` in its block ends on the line
     * just above it and holds an explained silent handler.
     * @param {Node | undefined} statement
     * @param {Node | undefined} parent
     */
    function followsExplained(statement, parent) {
      if (!statement?.loc || !parent || !('body' in parent) || !Array.isArray(parent.body)) return false;
      /** @type {Node[]} */
      const body = parent.body;
      const prev = body[body.indexOf(statement) - 1];
      return (
        prev?.loc !== undefined && prev.loc.end.line === statement.loc.start.line - 1 && explainedStatements.has(prev)
      );
    }
  },
};

export default { rules: { 'no-silent-catch': noSilentCatch } };
