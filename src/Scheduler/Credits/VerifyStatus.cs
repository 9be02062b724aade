namespace Potluck.Scheduler.Credits;

/// <summary>What checking a signed attestation or receipt found. Anything but <see cref="Valid"/> is a rejection.</summary>
public enum VerifyStatus
{
    Valid,
    /// <summary>Envelope or payload over the size limit; nothing was decoded.</summary>
    TooLarge,
    /// <summary>Bad MessagePack, a missing field, a field of the wrong size, or an unknown enum value.</summary>
    Malformed,
    /// <summary>The signer key does not parse or the signature does not verify (includes cross-type replays).</summary>
    BadSignature,
    /// <summary>A valid signature, but not by the party that must sign (the provider / the requester).</summary>
    WrongSigner,
    /// <summary>The receipt id is not the one derived from lease, provider and requester.</summary>
    ReceiptIdMismatch,
    /// <summary>The amount is not ceil(fuel × price / 1,000,000), or that overflows.</summary>
    AmountMismatch,
    /// <summary>The message names another lease than the one expected.</summary>
    LeaseMismatch,
    /// <summary>The requester or provider is not the one expected.</summary>
    PartyMismatch,
    ModuleHashMismatch,
    InputHashMismatch,
    OutputHashMismatch,
    OutputSizeMismatch,
    /// <summary>A receipt pays for another fuel count than the attested one.</summary>
    FuelMismatch,
    /// <summary>A receipt uses another price than the agreed one.</summary>
    PriceMismatch,
    /// <summary>A receipt refers to another attestation than the one expected.</summary>
    AttestationHashMismatch,
}

/// <summary>The outcome of a check: a status and, when <see cref="VerifyStatus.Valid"/>, the checked message.</summary>
public readonly record struct Verified<T>(VerifyStatus Status, T? Value)
    where T : class
{
    public bool IsValid => Status == VerifyStatus.Valid && Value is not null;

    internal static Verified<T> Fail(VerifyStatus status) => new(status, null);
}
