/** "Did you mean": the known word that a mistyped one most likely stands for. Pure. */

/** Optimal string alignment distance: edits, with a swap of neighbours counting as one. */
export function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.length][b.length];
}

/**
 * The known word that `word` is most likely a misspelling of, if any: the same word in other case or
 * with other separators, else the nearest within 2 edits (1 for words of 4 letters or fewer).
 */
export function nearestWord(word: string, known: readonly string[]): string | undefined {
  const squash = (text: string) => text.toLowerCase().replace(/[-_ ]/g, "");
  const same = known.find((k) => squash(k) === squash(word));
  if (same) return same;
  let best: string | undefined, bestDistance = Infinity;
  for (const k of known) {
    const distance = editDistance(word.toLowerCase(), k);
    if (distance <= (k.length > 4 ? 2 : 1) && distance < bestDistance) [best, bestDistance] = [k, distance];
  }
  return best;
}
