/** Small DOM helpers shared by the page's tabs. */
export const $ = <T extends HTMLElement = HTMLElement>(id: string): T => document.getElementById(id) as T;

/** Download links backed by object URLs, revoked together when the tab's state resets. */
export class DownloadLinks {
  private readonly urls: string[] = [];

  set(id: string, blob: Blob, name: string): void {
    const url = URL.createObjectURL(blob);
    this.urls.push(url);
    const link = $(id) as HTMLAnchorElement;
    link.href = url;
    link.download = name;
  }

  revokeAll(): void {
    for (const url of this.urls.splice(0)) URL.revokeObjectURL(url);
  }
}
