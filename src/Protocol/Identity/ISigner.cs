namespace Potluck.Protocol.Identity;

/// <summary>
/// The node's identity as protocols see it (go-libp2p's <c>crypto.PrivKey</c> behind <c>host.ID()</c>): who we are and a
/// way to sign as ourselves, never the key bytes. Gossipsub signs messages and peer records with it; the Noise handshake
/// signs its static key with it. <see cref="PrivateKey"/> is the one implementation a node has.
/// </summary>
public interface ISigner
{
    /// <summary>Our peer id (derived from <see cref="PublicKey"/>).</summary>
    PeerId PeerId { get; }

    /// <summary>Our public identity key.</summary>
    PublicKey PublicKey { get; }

    /// <summary>A signature over <paramref name="message"/> that <see cref="PublicKey"/> verifies.</summary>
    byte[] Sign(ReadOnlySpan<byte> message);
}
