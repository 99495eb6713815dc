/**
 * Access tokens of private repositories, by repository id, kept in page memory only: never in
 * storage, never in a URL, so a reload forgets them. The chat sends a repository's token with
 * each question and the source viewer with each file fetch, because the server checks every
 * request for a private repository's content against its host. When the server refuses
 * (`auth_failed`), the listener (the repository panel) shows why and asks for the token.
 */
type RefusedListener = (repoId: string, message: string) => void;

const tokens = new Map<string, string>();
let refusedListener: RefusedListener | null = null;

export function rememberToken(repoId: string, token: string): void {
  tokens.set(repoId, token);
}

export function tokenFor(repoId: string): string | undefined {
  return tokens.get(repoId);
}

export function onAccessRefused(listener: RefusedListener): void {
  refusedListener = listener;
}

/** The server refused `repoId`'s content: the remembered token (if any) is wrong or revoked. */
export function accessRefused(repoId: string, message: string): void {
  tokens.delete(repoId);
  refusedListener?.(repoId, message);
}
