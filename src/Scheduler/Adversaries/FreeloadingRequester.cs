using Microsoft.Extensions.Logging;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Providing;
using Potluck.Scheduler.Requesting;

namespace Potluck.Scheduler.Adversaries;

/// <summary>
/// An adversarial requester (simulations and attack tests): runs leases on the real lease protocol and takes the
/// results, but never pays for them; it can also send the provider receipts of its own making (for leases that never
/// were, or for more than agreed), or pay a real lease with a receipt that lies about its audit (a secret other than
/// the one committed to, or a check its committed decision did not select). What the provider ends with is the test.
/// </summary>
public sealed class FreeloadingRequester : IAsyncDisposable
{
    private readonly IHost _host;
    private readonly PrivateKey _key;
    private readonly NodeRuntime _runtime;
    private readonly LeaseOptions _options;
    private readonly BackgroundWork _work;
    private readonly Dictionary<PeerId, LeaseChannel> _channels = [];

    public FreeloadingRequester(IHost host, PrivateKey key, NodeRuntime runtime, ILogger log, LeaseOptions? options = null)
    {
        _host = host;
        _key = key;
        _runtime = runtime;
        _options = options ?? new LeaseOptions();
        _work = runtime.CreateBackgroundWork("freeloader", log);
    }

    /// <summary>Runs one lease with <paramref name="provider"/> and returns its outcome; pays nothing.</summary>
    public async Task<LeaseOutcome> LeaseAsync(PublicKey provider, LeaseWork work, CancellationToken ct)
    {
        var peer = provider.ToPeerId();
        if (!_channels.TryGetValue(peer, out var channel))
        {
            _channels[peer] = channel = new LeaseChannel(_host, peer, _options, _runtime.Time, _work);
        }
        ulong id;
        do
        {
            id = _runtime.SecureRandom.NextUInt64();
        }
        while (id == 0);
        var lease = new RequesterLease(_key, provider, id, work, _options);
        await using var runner = new LeaseRunner(channel, lease, _runtime.Time, _work);
        return await runner.RunAsync(ct);
    }

    /// <summary>
    /// A receipt signed by this requester paying <paramref name="provider"/> for lease <paramref name="leaseId"/>, with
    /// any fuel and price (the amount follows from them, as a well-formed receipt's must).
    /// </summary>
    public byte[] ForgeReceipt(PeerId provider, byte[] leaseId, ulong fuel, ulong pricePerMegaFuel, DateTimeOffset now)
    {
        if (!Receipt.TryComputeAmount(fuel, pricePerMegaFuel, out var amount))
        {
            throw new ArgumentOutOfRangeException(nameof(fuel), "fuel × price must fit the amount");
        }
        var receipt = new Receipt
        {
            ReceiptId = Receipt.ComputeId(leaseId, provider, _key.PeerId),
            LeaseId = leaseId,
            Requester = _key.PeerId.ToBytes(),
            Provider = provider.ToBytes(),
            FuelUsed = fuel,
            PricePerMillionFuel = pricePerMegaFuel,
            Amount = amount,
            AttestationHash = new byte[Attestation.HashLength],
            TimestampUnixMs = now.ToUnixTimeMilliseconds(),
        };
        return SignedReceipt.Create(receipt, _key).EnvelopeBytes;
    }

    /// <summary>
    /// A receipt paying exactly what the completed lease <paramref name="outcome"/> owes, revealing
    /// <paramref name="auditSecret"/> and claiming <paramref name="checked"/>: honest when both are what the requester
    /// committed to, a lie otherwise.
    /// </summary>
    public byte[] PayReceipt(LeaseOutcome outcome, ReadOnlySpan<byte> auditSecret, bool @checked, DateTimeOffset now)
    {
        if (outcome.Result is not { } result || outcome.Terms is not { } signed
            || !LeaseCodec.TryDecodeTerms(signed.Terms, _options, out var terms))
        {
            throw new ArgumentException("only a completed lease can be paid", nameof(outcome));
        }
        var attestation = SignedAttestation.Decode(result.Attestation, new CreditsOptions());
        if (!attestation.IsValid)
        {
            throw new ArgumentException($"the lease's attestation is {attestation.Status}", nameof(outcome));
        }
        var receipt = Receipt.For(attestation.Value!, (ulong)Math.Max(0, terms.PricePerMegaFuel), now, auditSecret, @checked);
        return SignedReceipt.Create(receipt, _key).EnvelopeBytes;
    }

    /// <summary>Sends a receipt on <see cref="ReceiptProtocol.Id"/> and returns the provider's answer.</summary>
    public async Task<ReceiptAck> SendReceiptAsync(PeerId provider, byte[] receipt, CancellationToken ct)
    {
        await using var stream = await _host.NewStreamAsync(provider, [ReceiptProtocol.Id], ct);
        return await ReceiptProtocol.SendAsync(stream, receipt, ct);
    }

    /// <summary>The lease id a lease result names (what attestations, receipts and ledgers use).</summary>
    public static byte[] LeaseIdOf(ulong requestId) => ExecutionMapping.LeaseId(requestId);

    public async ValueTask DisposeAsync()
    {
        foreach (var channel in _channels.Values)
        {
            await channel.DisposeAsync();
        }
        _channels.Clear();
        await _work.StopAsync();
    }
}
