import type { Rule } from 'eslint';

export declare const noSilentCatch: Rule.RuleModule;
declare const plugin: { rules: { 'no-silent-catch': Rule.RuleModule } };
export default plugin;
