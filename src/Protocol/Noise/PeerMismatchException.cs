using Potluck.Protocol.Identity;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Noise;

/// <summary>The remote proved an identity other than the one the dialer expected.</summary>
public sealed class PeerMismatchException : ProtocolViolationException
{
    public PeerMismatchException(PeerId expected, PeerId actual)
        : base(NoiseSecurity.ProtocolId, $"expected peer {expected}, the remote proved {actual}", ViolationCode.WrongPeer, BlastRadius.Connection)
    {
        Expected = expected;
        Actual = actual;
    }

    public PeerId Expected { get; }

    public PeerId Actual { get; }
}
