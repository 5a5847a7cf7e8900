/**
 * Fills `{name}` placeholders: the explanation tables stay plain data (no function per entry,
 * so every entry is covered by being data, and reads as the sentence it prints).
 */
export function fill (template: string, values: Readonly<Record<string, string | number>>): string {
  return template.replace(/\{(\w+)\}/g, (_placeholder, name: string) => String(values[name]))
}
