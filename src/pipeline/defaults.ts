// Defaults the CLI shows in its help, apart from the pipelines that use them, so that it need not load those first.

/** Pack size before compression. */
export const DEFAULT_PACK_SIZE = 64 << 20;
