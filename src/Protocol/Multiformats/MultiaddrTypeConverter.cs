using System.ComponentModel;
using System.Globalization;

namespace Potluck.Protocol.Multiformats;

/// <summary>Converts between a multiaddr and its text form, so configuration can bind lists of addresses.</summary>
public sealed class MultiaddrTypeConverter : TypeConverter
{
    public override bool CanConvertFrom(ITypeDescriptorContext? context, Type sourceType) =>
        sourceType == typeof(string) || base.CanConvertFrom(context, sourceType);

    public override bool CanConvertTo(ITypeDescriptorContext? context, Type? destinationType) =>
        destinationType == typeof(string) || base.CanConvertTo(context, destinationType);

    public override object? ConvertFrom(ITypeDescriptorContext? context, CultureInfo? culture, object value)
    {
        if (value is string text)
        {
            return Multiaddr.TryParse(text.Trim(), out var address, out var error)
                ? address
                : throw new FormatException($"'{text}' is not a multiaddr: {error}");
        }
        return base.ConvertFrom(context, culture, value);
    }

    public override object? ConvertTo(ITypeDescriptorContext? context, CultureInfo? culture, object? value, Type destinationType) =>
        destinationType == typeof(string) && value is Multiaddr address ? address.ToString() : base.ConvertTo(context, culture, value, destinationType);
}
