namespace Potluck.Scheduler.Leasing;

/// <summary>Every limit of the lease protocol a remote controls, and its timings. Both sides use the same class.</summary>
public sealed record LeaseOptions
{
    /// <summary>
    /// Largest frame accepted, checked before the frame is allocated. Default 1 MiB + 96 KiB: a result with its inline
    /// output, stderr and attestation.
    /// </summary>
    public int MaxFrameBytes { get; init; } = (1 << 20) + (96 << 10);

    /// <summary>Most bytes of the task's stderr a result carries; a provider cuts the rest. Default 64 KiB.</summary>
    public int MaxStderrBytes { get; init; } = 64 << 10;

    /// <summary>Largest data chunk; senders cut module and input into chunks of this size. Default 256 KiB.</summary>
    public int MaxChunkBytes { get; init; } = 256 << 10;

    /// <summary>Largest module accepted. Default 64 MiB.</summary>
    public long MaxModuleBytes { get; init; } = 64L << 20;

    /// <summary>Largest input accepted. Default 64 MiB.</summary>
    public long MaxInputBytes { get; init; } = 64L << 20;

    /// <summary>Largest output sent inline in a result; larger outputs travel as hash and size only. Default 1 MiB.</summary>
    public int MaxInlineOutputBytes { get; init; } = 1 << 20;

    /// <summary>Largest opaque attestation in a result. Default 8 KiB.</summary>
    public int MaxAttestationBytes { get; init; } = 8 << 10;

    /// <summary>Largest encoded terms in an offer. Default 4 KiB.</summary>
    public int MaxTermsBytes { get; init; } = 4 << 10;

    /// <summary>Largest signature accepted. Default 1 KiB.</summary>
    public int MaxSignatureBytes { get; init; } = 1 << 10;

    /// <summary>Largest receipt envelope carried on the lease stream. 8 KiB, as the ledger's own envelope limit.</summary>
    public int MaxReceiptBytes { get; init; } = 8 << 10;

    /// <summary>Largest encoded receipt acknowledgement carried on the lease stream. 512 bytes.</summary>
    public int MaxReceiptAckBytes { get; init; } = 512;

    /// <summary>
    /// Provider: a lease whose fuel limit is above this is paid as it goes, one signed debit note per slice of this much
    /// fuel (<see cref="DebitNoteSlicing"/>), when the requester asks for it. Default 2^30 (about a second of one core);
    /// 0 turns debit notes off; otherwise from 2^20 to 2^50.
    /// </summary>
    public long DebitNoteFuel { get; init; } = 1L << 30;

    /// <summary>Provider: how long it waits for a debit note to be paid before it stops the task and ends the lease. Default 10 s.</summary>
    public TimeSpan DebitNoteTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Requester: the most debit notes it pays on one lease (a provider cannot make it sign without bound). Default 4096.</summary>
    public int MaxDebitNotesPerLease { get; init; } = 4096;

    /// <summary>Longest reject detail, cancel reason or runtime string, in characters. Default 256.</summary>
    public int MaxReasonLength { get; init; } = 256;

    /// <summary>Heartbeat interval a provider offers. Default 5 seconds.</summary>
    public TimeSpan HeartbeatInterval { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Shortest heartbeat interval a requester accepts in terms. Default 500 ms.</summary>
    public TimeSpan MinHeartbeatInterval { get; init; } = TimeSpan.FromMilliseconds(500);

    /// <summary>Longest heartbeat interval a requester accepts in terms. Default 60 seconds.</summary>
    public TimeSpan MaxHeartbeatInterval { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>Heartbeat intervals of silence before a lease expires: the grace window. Default 3.</summary>
    public int MissedHeartbeatsBeforeExpiry { get; init; } = 3;

    /// <summary>
    /// How long a provider waits, after the accept, for the module and input to arrive, on top of their transfer at
    /// <see cref="MinContentBytesPerSecond"/>; then the lease ends and frees its core (an accepted lease whose input never
    /// comes would otherwise hold a core until its deadline). Default 10 seconds.
    /// </summary>
    public TimeSpan InputGrace { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>The slowest transfer of module and input a provider waits for. Default 256 KiB/s.</summary>
    public long MinContentBytesPerSecond { get; init; } = 256 << 10;

    /// <summary>How long an offer waits for an accept. Default 30 seconds.</summary>
    public TimeSpan OfferTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>How long a requester waits for an answer before repeating its request or accept. Default 5 seconds.</summary>
    public TimeSpan RetryInterval { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// How soon a requester repeats its request (or accept) when the stream it went on broke or none could be opened on
    /// a connection: no answer can come on it, so waiting <see cref="RetryInterval"/> for one only delays the lease (a
    /// connection trimmed as the request went out cost 5 s). A provider that could not be reached at all (its dial
    /// failed: partitioned, refusing) is not repeated sooner: a repeat at once would fail the same way and spend the
    /// lease's attempts (a requester cut off from its provider for 2 s then gave the task up). Each repeat still counts
    /// against <see cref="MaxAttempts"/>. Default 100 ms; at most <see cref="RetryInterval"/>.
    /// </summary>
    public TimeSpan LostStreamRetry { get; init; } = TimeSpan.FromMilliseconds(100);

    /// <summary>How many times a requester sends a request (or an accept) before giving up. Default 3.</summary>
    public int MaxAttempts { get; init; } = 3;

    /// <summary>How long a provider remembers a finished or rejected request to answer its retries alike. Default 5 minutes.</summary>
    public TimeSpan FinishedRetention { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>Most requests a provider tracks at once, live and remembered. Default 4096.</summary>
    public int MaxTrackedLeases { get; init; } = 4096;
}

/// <summary>A provider's local terms: what it accepts and what it charges.</summary>
public sealed record ProviderPolicy
{
    /// <summary>The advertised price, credits per million fuel; requests offering less are rejected.</summary>
    public long PricePerMegaFuel { get; init; }

    /// <summary>Most fuel one lease may ask for. Default 10^12.</summary>
    public long MaxFuel { get; init; } = 1_000_000_000_000;

    /// <summary>Most memory one lease may ask for. Default 4 GiB.</summary>
    public long MaxMemoryBytes { get; init; } = 4L << 30;

    /// <summary>Whether modules the provider lacks are fetched from the requester.</summary>
    public bool AcceptUnknownModules { get; init; } = true;

    /// <summary>Least time between a request and its deadline. Default 1 second.</summary>
    public TimeSpan MinDeadlineLead { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Latest deadline accepted, from now. Default 1 day.</summary>
    public TimeSpan MaxDeadlineLead { get; init; } = TimeSpan.FromDays(1);

    /// <summary>The exact runtime named in the terms, e.g. "wasmtime 50.0.1".</summary>
    public string RuntimeVersion { get; init; } = "";

    /// <summary>The provider's speed on one core, fuel per second, until it has measured its own. Default 500 million.</summary>
    public long SpeedFuelPerSecond { get; init; } = 500_000_000;

    /// <summary>
    /// How many times the expected run time (fuel limit ÷ speed) a lease may last before its deadline. Default 4: a slower
    /// moment of the machine still finishes, while a requester cannot hold a core for a day with a tiny task.
    /// </summary>
    public double DeadlineSlack { get; init; } = 4;

    /// <summary>The least run time a lease's deadline allows, however little fuel it asks for. Default 30 seconds.</summary>
    public TimeSpan MinRunTime { get; init; } = TimeSpan.FromSeconds(30);
}
