using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Multistream;

/// <summary>
/// How a multistream-select negotiation ended, for callers that take the expected outcomes as a value rather than an
/// exception (<see cref="MultistreamSelect.TrySelectAsync"/>, <see cref="MultistreamSelect.TryHandleAsync"/>): the
/// agreed <see cref="Protocol"/>, or a <see cref="Failure"/> that says why not — <see cref="FailureKind.Unsupported"/>
/// (the listener answered <c>na</c> to every proposal) or <see cref="FailureKind.PeerGone"/> (the stream ended between
/// two messages). <see cref="ToException"/> gives the exception the throwing API raises for it.
/// </summary>
public readonly struct Negotiation
{
    private readonly IReadOnlyList<string>? _offered;
    private readonly Exception? _cause;

    private Negotiation(string? protocol, Failure? failure, IReadOnlyList<string>? offered, Exception? cause = null)
    {
        Protocol = protocol;
        Failure = failure;
        _offered = offered;
        _cause = cause;
    }

    /// <summary>The protocol both sides agreed on; null when they did not.</summary>
    public string? Protocol { get; }

    /// <summary>Why no protocol was agreed; null when one was.</summary>
    public Failure? Failure { get; }

    public bool IsAgreed => Protocol is not null;

    /// <summary>The protocols proposed (dialer) when the negotiation failed; empty otherwise.</summary>
    public IReadOnlyList<string> Offered => _offered ?? [];

    internal static Negotiation Agreed(string protocol) => new(protocol, null, null);

    internal static Negotiation NotSupported(IReadOnlyList<string> offered) =>
        new(null, new Failure(FailureKind.Unsupported, BlastRadius.Stream, ProtocolNotSupportedException.Describe(offered)), offered);

    /// <summary>
    /// The stream ended between two messages: cleanly, or by the failure its input reports as a value (a reset, a closed
    /// connection; <see cref="IFailureAsValueReader"/>), which <see cref="ToException"/> then raises as it came.
    /// </summary>
    internal static Negotiation Ended(IReadOnlyList<string> offered, System.IO.Pipelines.PipeReader input) =>
        (input as Muxing.IFailureAsValueReader)?.Failure is { } cause
            ? new(null, Failures.Classify(cause), offered, cause)
            : new(null, new Failure(FailureKind.PeerGone, BlastRadius.Stream, $"{MultistreamSelect.Name}: the stream ended during negotiation"), offered);

    /// <summary>
    /// The exception the throwing API raises for this failure: <see cref="ProtocolNotSupportedException"/> or
    /// <see cref="PeerGoneException"/>. Only for a failed negotiation.
    /// </summary>
    public Exception ToException() => _cause ?? Failure switch
    {
        { Kind: FailureKind.Unsupported } => new ProtocolNotSupportedException(Offered),
        { } f => new PeerGoneException(f.Reason),
        null => throw new InvalidOperationException($"the negotiation agreed on {Protocol}: there is no failure to raise"),
    };
}
