using Potluck.Scheduler.Leasing;

namespace Potluck.Node.Hosting;

/// <summary>
/// Start-up range checks of the debit-note settings (<see cref="DebitNoteSlicing"/>): <c>compute:provider:lease:debitNoteFuel</c>,
/// <c>debitNoteTimeout</c>, and <c>compute:client:lease:maxDebitNotesPerLease</c>; run by <see cref="PotluckOptionsValidator"/>.
/// </summary>
internal static class DebitNoteOptionsChecks
{
    /// <summary>Smallest slice: 2^20 fuel (about a millisecond of one core; smaller slices cost more in signatures than they bound).</summary>
    public const long MinSliceFuel = 1L << 20;

    /// <summary>Largest slice: 2^50 fuel.</summary>
    public const long MaxSliceFuel = 1L << 50;

    public static IEnumerable<string> Validate(LeaseOptions provider, LeaseOptions client)
    {
        if (provider.DebitNoteFuel != 0 && provider.DebitNoteFuel is < MinSliceFuel or > MaxSliceFuel)
        {
            yield return $"'compute:provider:lease:debitNoteFuel' is {provider.DebitNoteFuel}; it must be 0 (off) or from {MinSliceFuel} to {MaxSliceFuel}, such as {1L << 30}";
        }
        if (provider.DebitNoteTimeout < TimeSpan.FromMilliseconds(100) || provider.DebitNoteTimeout > TimeSpan.FromMinutes(10))
        {
            yield return $"'compute:provider:lease:debitNoteTimeout' is {provider.DebitNoteTimeout}; it must be from 00:00:00.1 to 00:10:00, such as 00:00:10";
        }
        if (client.MaxDebitNotesPerLease is < 1 or > 1 << 20)
        {
            yield return $"'compute:client:lease:maxDebitNotesPerLease' is {client.MaxDebitNotesPerLease}; it must be from 1 to 1048576, such as 4096";
        }
    }
}
