using Potluck.Protocol.Identity;

namespace Potluck.Protocol.Tests.Identity;

public class PeerIdTests
{
    [Test]
    public void Ed25519PeerId_PrintsAs12D3KooW_AndRoundTripsThroughBothTextForms()
    {
        var key = PrivateKey.FromSeed(new byte[32]);
        var id = key.PeerId;
        Assert.That(id.ToString(), Does.StartWith("12D3KooW"));
        Assert.That(PeerId.Parse(id.ToString()), Is.EqualTo(id));
        Assert.That(id.ToCidString(), Does.StartWith("bafz"));
        Assert.That(PeerId.Parse(id.ToCidString()), Is.EqualTo(id));
        Assert.That(id.TryExtractPublicKey(), Is.EqualTo(key.PublicKey));
    }

    [Test]
    public void Sign_VerifiesWithPublicKey_AndFailsOnTamperedMessage()
    {
        var key = PrivateKey.FromSeed(Enumerable.Range(1, 32).Select(i => (byte)i).ToArray());
        var sig = key.Sign("hello"u8);
        Assert.That(key.PublicKey.Verify("hello"u8, sig), Is.True);
        Assert.That(key.PublicKey.Verify("hellp"u8, sig), Is.False);
    }
}
