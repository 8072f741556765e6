/** Names of the bus's log streams (a leaf module: the split mover and the readers import it without the publisher). */

/** The topic of a stream written by the bus, or null for any other stream. */
export function topicOfStream(stream: string): string | null {
  if (!stream.startsWith('t/')) return null;
  const i = stream.indexOf('/', 2);
  return i < 0 ? null : stream.slice(2, i);
}
