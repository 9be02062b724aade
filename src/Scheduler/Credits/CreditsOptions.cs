namespace Potluck.Scheduler.Credits;

/// <summary>
/// Limits and policy for attestations, receipts and the ledger. The size limits bound what a remote peer can
/// make us decode; they are checked before any MessagePack is read.
/// </summary>
public sealed record CreditsOptions
{
    /// <summary>
    /// Largest signed envelope accepted (payload + signer key + signature + framing). Default 8 KiB: an
    /// Ed25519-signed attestation is about 300 bytes; the slack admits RSA keys (up to 1200 bytes encoded)
    /// and their signatures.
    /// </summary>
    public int MaxEnvelopeBytes { get; init; } = 8 * 1024;

    /// <summary>Largest payload inside an envelope. Default 2 KiB; attestations and receipts are a few hundred bytes.</summary>
    public int MaxPayloadBytes { get; init; } = 2 * 1024;

    /// <summary>
    /// Micro-credits granted once, as a <see cref="LedgerEntryKind.Grant"/> entry, when a node's ledger is
    /// first created. Default 0: nobody mints credit; a new requester runs on the credit each provider chooses to
    /// extend (<c>compute:provider:creditLimitPerRequester</c>). A private cluster, whose members trust each other, may
    /// configure one. A grant is local bookkeeping, signed by nobody and no part of a proof of earnings.
    /// </summary>
    public long InitialGrant { get; init; }

    /// <summary>
    /// The most this node lets itself owe (micro-credits): <see cref="CreditLedger.ReservePayment"/> reserves while the
    /// available balance stays above minus this. Default 10,000,000 (ten credits). What a requester can really take
    /// on credit is bounded by the providers (each extends at most its own credit limit); this is the requester's own budget.
    /// </summary>
    public long MaxDebt { get; init; } = 10_000_000;

    /// <summary>
    /// Whether <see cref="CreditLedger.ReservePayment"/> may reserve without any bound (ignoring <see cref="MaxDebt"/>).
    /// Default false.
    /// </summary>
    public bool AllowOverdraft { get; init; }

    /// <summary>Most entries <see cref="CreditLedger.Recent"/> returns in one call. Default 1000.</summary>
    public int MaxRecent { get; init; } = 1000;

    /// <summary>
    /// Most receipts in one proof of earnings, produced or checked. Default 10,000 (a few MiB of receipts).
    /// A proof offered by a remote peer longer than this is rejected unread.
    /// </summary>
    public int MaxProofReceipts { get; init; } = 10_000;

    /// <summary>
    /// How long credit a provider earns from this node is held before it counts in the provider's standing here
    /// (<see cref="CreditLedger.Requester"/>'s <c>Supplied</c>): while held, a fraud proof this node upholds against the
    /// provider, or a re-run here that contradicts it, forfeits it for good (<see cref="CreditLedger.Forfeit"/>). Default
    /// 1 hour; 0 turns holding back off (earnings count at once and nothing is at stake beyond the provider's reputation).
    /// </summary>
    public TimeSpan Holdback { get; init; } = TimeSpan.FromHours(1);
}
