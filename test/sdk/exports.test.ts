import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const src = join(root, 'src');

/**
 * The named types (interfaces, type aliases, classes, enums) of src/ that the
 * public surface of `entry` uses but `entry` does not export. The surface is
 * every exported declaration: the types in its signatures (public members of
 * classes only), the bodies of exported type aliases and interfaces, the
 * inferred types of what has no annotation, and so on through every named
 * type reached that way.
 */
function unexportedTypes(entry: string): string[] {
  const program = ts.createProgram([entry], {
    strict: true,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2022,
    skipLibCheck: true,
    noEmit: true,
  });
  const checker = program.getTypeChecker();
  const moduleSymbol = checker.getSymbolAtLocation(program.getSourceFile(entry)!)!;
  const real = (s: ts.Symbol): ts.Symbol => (s.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(s) : s);
  const exported = new Set(checker.getExportsOfModule(moduleSymbol).map(real));
  const missing = new Set<string>();
  const seen = new Set<ts.Symbol>();
  const todo: ts.Symbol[] = [...exported];
  const inSrc = (d: ts.Node): boolean => d.getSourceFile().fileName.startsWith(src);
  const NAMED = ts.SymbolFlags.Interface | ts.SymbolFlags.TypeAlias | ts.SymbolFlags.Class | ts.SymbolFlags.Enum;

  const reach = (sym: ts.Symbol | undefined): void => {
    if (!sym) return;
    const s = real(sym);
    if (!(s.flags & NAMED) || seen.has(s)) return;
    const decl = s.declarations?.[0];
    if (!decl || !inSrc(decl)) return;
    if (!exported.has(s)) missing.add(`${s.name} (${relative(root, decl.getSourceFile().fileName)})`);
    todo.push(s);
  };
  const typeSeen = new Set<ts.Type>();
  const walkType = (t: ts.Type): void => {
    if (typeSeen.has(t)) return;
    typeSeen.add(t);
    reach(t.aliasSymbol);
    t.aliasTypeArguments?.forEach(walkType);
    if (t.isUnionOrIntersection()) return t.types.forEach(walkType);
    const sym = t.getSymbol();
    if (sym && sym.flags & NAMED) return reach(sym);
    if (t.flags & ts.TypeFlags.Object) {
      if ((t as ts.ObjectType).objectFlags & ts.ObjectFlags.Reference)
        checker.getTypeArguments(t as ts.TypeReference).forEach(walkType);
      // An anonymous object type: its members' types.
      if (sym && sym.flags & (ts.SymbolFlags.TypeLiteral | ts.SymbolFlags.ObjectLiteral)) {
        for (const p of checker.getPropertiesOfType(t))
          if (p.valueDeclaration) walkType(checker.getTypeOfSymbolAtLocation(p, p.valueDeclaration));
      }
      for (const sig of [...t.getCallSignatures(), ...t.getConstructSignatures()]) walkSignature(sig);
    }
  };
  const walkSignature = (sig: ts.Signature): void => {
    for (const p of sig.getParameters())
      if (p.valueDeclaration) walkType(checker.getTypeOfSymbolAtLocation(p, p.valueDeclaration));
    walkType(sig.getReturnType());
  };
  const hidden = (m: ts.Node): boolean =>
    ts.canHaveModifiers(m) &&
    (ts.getModifiers(m) ?? []).some(
      (x) => x.kind === ts.SyntaxKind.PrivateKeyword || x.kind === ts.SyntaxKind.ProtectedKeyword,
    );
  // Type references written in a declaration; a function, method or variable without an annotation adds its inferred type.
  const internal = (n: ts.Node): boolean => ts.getJSDocTags(n).some((t) => t.tagName.text === 'internal');
  const walkNode = (n: ts.Node): void => {
    if (internal(n)) return; // left out of the documented surface (`@internal`)
    if (ts.isClassElement(n) && (hidden(n) || (n.name !== undefined && ts.isPrivateIdentifier(n.name)))) return;
    if (ts.isParameter(n) && hidden(n)) return; // a private constructor parameter property
    if (ts.isBlock(n)) return; // bodies are not signatures
    if (ts.isTypeReferenceNode(n)) reach(checker.getSymbolAtLocation(n.typeName));
    else if (ts.isExpressionWithTypeArguments(n)) reach(checker.getSymbolAtLocation(n.expression));
    if (
      (ts.isFunctionDeclaration(n) ||
        ts.isMethodDeclaration(n) ||
        ts.isGetAccessorDeclaration(n) ||
        ts.isArrowFunction(n)) &&
      !n.type
    ) {
      const sig = checker.getSignatureFromDeclaration(n);
      if (sig) walkType(sig.getReturnType());
    }
    if ((ts.isVariableDeclaration(n) || ts.isPropertyDeclaration(n)) && !n.type)
      walkType(checker.getTypeAtLocation(n.name));
    ts.forEachChild(n, walkNode);
  };
  while (todo.length) {
    const s = todo.pop()!;
    if (seen.has(s)) continue;
    seen.add(s);
    for (const d of s.declarations ?? []) if (inSrc(d)) walkNode(d);
    if (
      s.flags & ts.SymbolFlags.Value &&
      s.valueDeclaration &&
      inSrc(s.valueDeclaration) &&
      !(s.flags & ts.SymbolFlags.Class)
    )
      walkType(checker.getTypeOfSymbolAtLocation(s, s.valueDeclaration));
  }
  return [...missing].sort();
}

/** Every cycle of src/ modules (type imports count) as its sorted files. */
function importCycles(): string[][] {
  const walk = (d: string, out: string[] = []): string[] => {
    for (const f of readdirSync(d)) {
      const p = join(d, f);
      if (statSync(p).isDirectory()) walk(p, out);
      else if (p.endsWith('.ts')) out.push(p);
    }
    return out;
  };
  const files = walk(src);
  const graph = new Map<string, string[]>();
  for (const f of files) {
    const deps = [
      ...readFileSync(f, 'utf8').matchAll(
        /^\s*(?:import|export)\s+(?:type\s+)?(?:[^'";]*?\sfrom\s+)?['"](\.[^'"]+)['"]/gm,
      ),
    ].map((m) => resolve(dirname(f), m[1]!.replace(/\.js$/, '.ts')));
    graph.set(f, deps);
  }
  // Tarjan's strongly connected components; one of more than one file is a cycle.
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const c: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        c.push(relative(root, w));
      } while (w !== v);
      if (c.length > 1) out.push(c.sort());
    }
  };
  for (const f of files) if (!index.has(f)) visit(f);
  return out;
}

describe('public surface', () => {
  it('the SDK exports every type its public signatures use', () => {
    expect(unexportedTypes(join(src, 'sdk/index.ts'))).toEqual([]);
  });

  it('the SDK and the root list their exports (no export *)', () => {
    for (const f of ['src/index.ts', 'src/sdk/index.ts'])
      expect(readFileSync(join(root, f), 'utf8')).not.toMatch(/^\s*export\s*\*/m);
  });

  it('no import cycle runs through the SDK or the machines face; the processor wire types import nothing', () => {
    const mine = importCycles().filter((c) => c.some((f) => f.startsWith('src/sdk/') || f.startsWith('src/machines/')));
    expect(mine).toEqual([]);
    expect(readFileSync(join(src, 'machines/wire.ts'), 'utf8')).not.toMatch(/^\s*import\s/m);
  });
});
