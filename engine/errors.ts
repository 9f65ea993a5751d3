/** An error the user can cause and fix (bad input, missing file, no GPU): printed as one sentence. */
export class UserError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UserError';
  }
}
